using System.Globalization;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>
/// OnnxTune.Hosting.KillTarget SIGKILLs itself at one named step of a promotion; the restarted process must serve a
/// promoted version that loads (never a half-promoted one, never the base model once a version is promoted), keep
/// every acknowledged record, list no orphan or half-pruned folder, and have a watermark that matches the serving
/// version's provenance. A second process on a held store is refused with a typed error naming the holder.
/// </summary>
public sealed class CrashPointTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly TempDir _dir = new();
    private readonly ITestOutputHelper _output;
    private readonly List<KillRestartTests.ChildProcess> _children = [];

    public CrashPointTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        foreach (var child in _children) child.Dispose();
        _dir.Dispose();
    }

    private string Versions => Path.Combine(_dir.Sub("store"), "versions");

    private KillRestartTests.ChildProcess Start(string mode, params string[] options)
    {
        var child = KillRestartTests.ChildProcess.Start(mode, _dir.Path, options);
        _children.Add(child);
        return child;
    }

    private static string Value(List<string> lines, string key) =>
        lines.Single(l => l.StartsWith(key + " ", StringComparison.Ordinal) || l == key)[key.Length..].Trim();

    [Theory]
    [InlineData("after-version-folder")]
    [InlineData("after-pointer")]
    [InlineData("after-watermark")]
    [InlineData("during-prune")]
    public async Task SIGKILL_at_a_promotion_step_restarts_on_a_consistent_store(string point)
    {
        Clusters.WriteArtifacts(_dir.Sub("artifacts"));
        var prune = point == "during-prune";
        // With KeepVersions 1 the promotion of version 2 prunes version 1.
        var feed = Start("feed", ["--epochs", "5", "--seed", "1", "--interval-ms", "5", "--crash-at", point, .. prune ? new[] { "--keep-versions", "1" } : []]);
        Assert.NotEqual(0, await feed.WaitForExitAsync(Timeout));
        var lines = feed.Lines();
        _output.WriteLine(feed.RoundLog());
        Assert.Contains($"CRASH {point}", lines);
        var accepted = lines.Where(l => l.StartsWith("ACCEPTED ", StringComparison.Ordinal)).Select(l => l["ACCEPTED ".Length..]).ToList();
        Assert.NotEmpty(accepted);

        // What the kill left on disk.
        var pointer = Path.Combine(Versions, ModelVersionStore.CurrentFileName);
        var v1 = Path.Combine(Versions, "v000001");
        switch (point)
        {
            case "after-version-folder":
                Assert.True(File.Exists(Path.Combine(v1, ModelVersionStore.ModelFileName)));
                Assert.False(File.Exists(pointer));
                break;
            case "after-pointer":
                Assert.Equal("1", File.ReadAllText(pointer).Trim());
                Assert.False(File.Exists(Path.Combine(v1, ModelVersionStore.PromotedMarkerFileName)));
                Assert.Equal("0", await ReadWatermarkAsync());
                break;
            case "after-watermark":
                Assert.Equal("1", File.ReadAllText(pointer).Trim());
                break;
            case "during-prune":
                Assert.Equal("2", File.ReadAllText(pointer).Trim());
                Assert.Single(Directory.EnumerateDirectories(Versions, ".trash-v000001-*"));
                break;
        }

        var verify = Start("verify");
        Assert.Equal(0, await verify.WaitForExitAsync(Timeout));
        var v = verify.Lines();
        _output.WriteLine(string.Join("\n", v.Where(l => !l.StartsWith("RECORD ", StringComparison.Ordinal) && !l.StartsWith("PROBE", StringComparison.Ordinal))));
        var stored = v.Where(l => l.StartsWith("RECORD ", StringComparison.Ordinal)).Select(l => l["RECORD ".Length..]).ToHashSet();
        Assert.All(accepted, id => Assert.Contains(id, stored));
        Assert.All(v.Where(l => l.StartsWith("LOADS ", StringComparison.Ordinal)), l => Assert.EndsWith(" ok", l, StringComparison.Ordinal));
        Assert.Equal("", Value(v, "LEFTOVERS"));
        var (serving, versions) = point switch
        {
            "after-version-folder" => ("base", ""),
            "during-prune" => ("2", "2"),
            _ => ("1", "1"),
        };
        Assert.Equal(serving, Value(v, "SERVING"));
        Assert.Equal(versions, Value(v, "VERSIONS"));
        if (serving == "base")
        {
            Assert.Equal("0", Value(v, "WATERMARK"));
            Assert.Equal("none", Value(v, "UPTO"));
        }
        else
        {
            // The watermark equals the serving version's upTo: the promoted round's feedback is not trained again,
            // and nothing newer was skipped.
            Assert.Equal(Value(v, "UPTO"), Value(v, "WATERMARK"));
            Assert.True(long.Parse(Value(v, "WATERMARK"), CultureInfo.InvariantCulture) > 0);
        }
    }

    [Fact]
    public async Task A_second_process_on_a_held_store_is_refused_with_the_holder_named_and_gets_it_after_the_holder_dies()
    {
        Clusters.WriteArtifacts(_dir.Sub("artifacts"));
        var holder = Start("hold");
        Assert.Equal("READY base", await holder.WaitForLineAsync(l => l.StartsWith("READY ", StringComparison.Ordinal), Timeout));
        var second = Start("verify");
        Assert.Equal(4, await second.WaitForExitAsync(Timeout));
        Assert.Equal($"LOCKED {holder.Id} {Environment.MachineName}", second.Lines().Single());

        holder.Kill();
        await holder.WaitForExitAsync(Timeout);
        // The kernel released the lock with the killed process: the next start takes the store.
        var third = Start("verify");
        Assert.Equal(0, await third.WaitForExitAsync(Timeout));
        Assert.Equal("base", Value(third.Lines(), "SERVING"));
    }

    private async Task<string> ReadWatermarkAsync()
    {
        using var store = new SqliteFeedbackStore(Path.Combine(_dir.Sub("store"), "feedback.db"));
        return await store.GetStateAsync("trained_through_sequence") ?? "0";
    }
}
