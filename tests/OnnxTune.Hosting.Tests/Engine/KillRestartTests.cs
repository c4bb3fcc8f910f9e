using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>
/// A real process (OnnxTune.Hosting.KillTarget: Generic Host, SQLite feedback, the training engine over the tiny
/// cluster MLP) is killed with SIGKILL in the middle of a round; the restarted process must serve the last promoted
/// version (not the half-trained candidate) with every feedback record it had acknowledged, and train on.
/// </summary>
public sealed class KillRestartTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120); // a hang guard for shared CI machines
    private readonly TempDir _dir = new();
    private readonly ITestOutputHelper _output;
    private readonly List<ChildProcess> _children = [];

    public KillRestartTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        foreach (var child in _children) child.Dispose();
        _dir.Dispose();
    }

    private string Store => _dir.Sub("store");

    private string Versions => Path.Combine(Store, "versions");

    private ChildProcess Start(string mode, params string[] options)
    {
        var child = ChildProcess.Start(mode, _dir.Path, options);
        _children.Add(child);
        return child;
    }

    [Fact]
    public async Task Process_killed_mid_round_restarts_serving_the_last_promoted_version_with_every_accepted_record()
    {
        var clock = Stopwatch.StartNew();
        _output.WriteLine($"child processes run with {ChildProcess.DotnetHost()}");
        Clusters.WriteArtifacts(_dir.Sub("artifacts"));

        // 1. Feed until version 1 is promoted and the next round is training, then kill the process outright.
        // Long rounds, so the kill lands inside one even when this process reacts slowly (a busy machine): at 300 epochs
        // a fast child finished the round (~0.4 s) before the kill arrived.
        const int epochs = 1000; // EpochsPerRound's maximum
        var feed = Start("feed", "--epochs", epochs.ToString(CultureInfo.InvariantCulture), "--batch-size", "1", "--seed", "1", "--interval-ms", "10");
        await feed.WaitForLineAsync(l => l == "PROMOTED 1", Timeout);
        var promotedAt = clock.Elapsed;
        var probe1 = feed.Lines().Single(l => l.StartsWith("PROBE 1 ", StringComparison.Ordinal))["PROBE 1 ".Length..];
        var acceptedBeforePromotion = Accepted(feed.Lines()).Count;
        // The promoting round (1 unless an earlier round was rejected) reports right after PROMOTED; the kill hits the next one.
        var completed = await feed.WaitForLineAsync(l => l.StartsWith("ROUND_COMPLETED ", StringComparison.Ordinal) && l.EndsWith(" Promoted", StringComparison.Ordinal), Timeout);
        var next = long.Parse(completed.Split(' ')[1], CultureInfo.InvariantCulture) + 1;
        await feed.WaitForLineAsync(l => l == $"ROUND_STARTED {next}", Timeout);
        var roundDir = Path.Combine(Store, "rounds", next.ToString("D6", CultureInfo.InvariantCulture));
        // Kill inside the round's epochs (after its fifth, each of 50+ steps) with records accepted while it trains.
        await feed.WaitForLineAsync(l => l == $"EPOCH {next} 5", Timeout);
        await WaitUntilAsync(() => Accepted(feed.Lines().SkipWhile(l => l != $"ROUND_STARTED {next}")).Count >= 3, "records accepted during the round");
        var killedAt = clock.Elapsed;
        feed.Kill();
        await feed.WaitForExitAsync(Timeout);

        var lines = feed.Lines();
        var accepted = Accepted(lines);
        var killedRoundNew = NewRecords(feed.RoundLog(), next);
        var lastEpoch = lines.Where(l => l.StartsWith($"EPOCH {next} ", StringComparison.Ordinal)).Max(l => int.Parse(l.Split(' ')[2], CultureInfo.InvariantCulture));
        _output.WriteLine(feed.RoundLog());
        var acceptedDuringRound = Accepted(lines.SkipWhile(l => l != $"ROUND_STARTED {next}")).Count;
        _output.WriteLine($"feed: PROMOTED 1 at {promotedAt.TotalSeconds:F1} s, killed at {killedAt.TotalSeconds:F1} s after epoch {lastEpoch} of {epochs} of round {next}; {accepted.Count} records accepted ({accepted.Count - acceptedBeforePromotion} after the promotion, {acceptedDuringRound} during the killed round)");
        Assert.DoesNotContain(lines, l => l.StartsWith($"ROUND_COMPLETED {next} ", StringComparison.Ordinal) || l == "PROMOTED 2");
        Assert.True(accepted.Count > acceptedBeforePromotion, "no record was accepted after version 1 was promoted");
        // The kill left the round half done: its scratch folder is still there and version 1 is still current.
        Assert.True(lastEpoch < epochs && Directory.Exists(roundDir), $"round {next} (last epoch {lastEpoch}) was not killed mid-round");
        Assert.Equal("1", File.ReadAllText(Path.Combine(Versions, ModelVersionStore.CurrentFileName)).Trim());
        // What a kill during a promotion's copy would leave: a temp version folder with a truncated model.
        var partial = Directory.CreateDirectory(Path.Combine(Versions, $".tmp-v000002-{Guid.NewGuid():N}")).FullName;
        var model = File.ReadAllBytes(Path.Combine(Versions, "v000001", ModelVersionStore.ModelFileName));
        File.WriteAllBytes(Path.Combine(partial, ModelVersionStore.ModelFileName), model[..(model.Length / 2)]);

        // 2. Restart: version 1 serves at once, with exactly its weights, and every acknowledged record is stored.
        var verify = Start("verify");
        Assert.Equal(0, await verify.WaitForExitAsync(Timeout));
        var v = verify.Lines();
        _output.WriteLine($"verify: {string.Join(" | ", v.Where(l => !l.StartsWith("RECORD ", StringComparison.Ordinal) && !l.StartsWith("PROBE", StringComparison.Ordinal)))}");
        Assert.Equal("SERVING 1", v[0]);
        Assert.Equal(probe1, v.Single(l => l.StartsWith("PROBE ", StringComparison.Ordinal))["PROBE 1 ".Length..]);
        var stored = v.Where(l => l.StartsWith("RECORD ", StringComparison.Ordinal)).Select(l => l["RECORD ".Length..]).ToHashSet(StringComparer.Ordinal);
        Assert.Equal($"RECORDS {stored.Count}", v.Single(l => l.StartsWith("RECORDS ", StringComparison.Ordinal)));
        var lost = accepted.Where(id => !stored.Contains(id)).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} of {accepted.Count} accepted records are missing after the restart: {string.Join(", ", lost.Take(5))}");
        // At most the one write in flight at the kill may be stored without having been acknowledged.
        Assert.InRange(stored.Count, accepted.Count, accepted.Count + 1);
        Assert.Equal("VERSIONS 1", v.Single(l => l.StartsWith("VERSIONS ", StringComparison.Ordinal)));
        Assert.Empty(Directory.EnumerateDirectories(Versions, ".tmp-*"));
        Assert.False(Directory.Exists(Path.Combine(Store, "rounds")) && Directory.EnumerateFileSystemEntries(Path.Combine(Store, "rounds")).Any(),
            "the killed round's scratch folder survived the restart");

        // 3. The restarted app trains on: the next round completes and promotes version 2.
        var again = Start("feed", "--epochs", "10", "--seed", "2", "--interval-ms", "10", "--stop-after-version", "2");
        Assert.Equal("READY 1", await again.WaitForLineAsync(l => l.StartsWith("READY ", StringComparison.Ordinal), Timeout));
        var outcome = await again.WaitForLineAsync(l => l.StartsWith("ROUND_COMPLETED ", StringComparison.Ordinal), Timeout);
        Assert.True(outcome.EndsWith(" Promoted", StringComparison.Ordinal), outcome);
        Assert.Contains("PROMOTED 2", again.Lines());
        Assert.Equal(0, await again.WaitForExitAsync(Timeout));
        _output.WriteLine(again.RoundLog());
        Assert.Equal("STOPPED", again.Lines()[^1]);
        Assert.Equal(["PROMOTED 2"], again.Lines().Where(l => l.StartsWith("PROMOTED ", StringComparison.Ordinal)));
        Assert.Equal("2", File.ReadAllText(Path.Combine(Versions, ModelVersionStore.CurrentFileName)).Trim());
        // The killed round never moved the training watermark: its new records are new again for the next round.
        Assert.True(NewRecords(again.RoundLog(), next + 1) >= killedRoundNew, $"the round after the restart trains on fewer new records than the killed round had ({killedRoundNew})");
        _output.WriteLine($"version 2 promoted after the restart; whole test {clock.Elapsed.TotalSeconds:F1} s");
    }

    private static List<string> Accepted(IEnumerable<string> lines) =>
        lines.Where(l => l.StartsWith("ACCEPTED ", StringComparison.Ordinal)).Select(l => l["ACCEPTED ".Length..]).ToList();

    /// <summary>The new-record count of a round, from its "round N started with X new and Y replayed records" log line.</summary>
    private static int NewRecords(string log, long round)
    {
        var m = System.Text.RegularExpressions.Regex.Match(log, $@"round {round} started with (\d+) new");
        Assert.True(m.Success, $"no start log line of round {round} in:\n{log}");
        return int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(10);
        }
    }

    /// <summary>One run of OnnxTune.Hosting.KillTarget (<c>dotnet KillTarget.dll mode work options</c>) with its stdout lines collected.</summary>
    internal sealed class ChildProcess : IDisposable
    {
        private readonly Process _process;
        private readonly List<string> _lines = [];
        private readonly StringBuilder _stderr = new();

        private ChildProcess(Process process) => _process = process;

        public static ChildProcess Start(string mode, string work, string[] options)
        {
            var dll = typeof(KillRestartTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
                .SingleOrDefault(a => a.Key == "OnnxTune.Hosting.KillTarget")?.Value;
            Assert.True(File.Exists(dll), $"OnnxTune.Hosting.KillTarget is not built (expected '{dll}')");
            var info = new ProcessStartInfo(DotnetHost())
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var a in new[] { dll!, mode, work }.Concat(options)) info.ArgumentList.Add(a);
            var child = new ChildProcess(new Process { StartInfo = info });
            child._process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (child._lines) child._lines.Add(e.Data);
            };
            child._process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (child._stderr) child._stderr.AppendLine(e.Data);
            };
            child._process.Start();
            child._process.BeginOutputReadLine();
            child._process.BeginErrorReadLine();
            return child;
        }

        /// <summary>The muxer running these tests, else the one the SDK names, else the one under DOTNET_ROOT, else dotnet from PATH.</summary>
        internal static string DotnetHost()
        {
            var exe = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
            var self = Environment.ProcessPath;
            if (self is not null && Path.GetFileName(self).Equals(exe, StringComparison.OrdinalIgnoreCase)) return self;
            if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host)) return host;
            if (Environment.GetEnvironmentVariable("DOTNET_ROOT") is { Length: > 0 } root && File.Exists(Path.Combine(root, exe))) return Path.Combine(root, exe);
            return exe;
        }

        public List<string> Lines()
        {
            lock (_lines) return [.. _lines];
        }

        /// <summary>The child's log lines about rounds (started, training, finished).</summary>
        public string RoundLog()
        {
            lock (_stderr)
                return string.Join("\n", _stderr.ToString().Split('\n').Where(l => l.Contains("round", StringComparison.OrdinalIgnoreCase)));
        }

        private string Diagnostics()
        {
            string err;
            lock (_stderr) err = _stderr.ToString();
            var lines = Lines();
            return $"exited: {_process.HasExited}; last stdout lines:\n{string.Join("\n", lines.Skip(Math.Max(0, lines.Count - 10)))}\nstderr (tail):\n{err[Math.Max(0, err.Length - 4000)..]}";
        }

        public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (true)
            {
                var exited = _process.HasExited;
                // After an exit, wait until the output readers reached the end of the streams: lines may still be in flight.
                if (exited) await _process.WaitForExitAsync();
                var hit = Lines().FirstOrDefault(match);
                if (hit is not null) return hit;
                Assert.False(exited, "KillTarget exited before printing the expected line; " + Diagnostics());
                Assert.True(DateTime.UtcNow < deadline, $"KillTarget did not print the expected line within {timeout.TotalSeconds} s; " + Diagnostics());
                await Task.Delay(10);
            }
        }

        public async Task<int> WaitForExitAsync(TimeSpan timeout)
        {
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                // Also waits for the redirected streams to reach their end, so Lines() is complete afterwards.
                await _process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"KillTarget did not exit within {timeout.TotalSeconds} s; " + Diagnostics());
            }
            return _process.ExitCode;
        }

        /// <summary>Gets the child's process id.</summary>
        public int Id => _process.Id;

        /// <summary>SIGKILL on Linux: no shutdown code runs.</summary>
        public void Kill() => _process.Kill(entireProcessTree: true);

        public void Dispose()
        {
            try
            {
                if (!_process.HasExited)
                {
                    _process.Kill(entireProcessTree: true);
                    _process.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException)
            {
            }
            _process.Dispose();
        }
    }
}
