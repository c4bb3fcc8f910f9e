using System.Diagnostics;
using System.Globalization;
using Npgsql;
using OnnxTune.Hosting.Tests;
using OnnxTune.Hosting.Tests.Engine;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.PostgreSql.Tests;

/// <summary>
/// The done-means test of several instances: three real processes (OnnxTune.Hosting.PostgreSql.FleetTarget: Generic
/// Host, the training engine over the tiny cluster MLP, PostgreSQL feedback and versions, a 3 s trainer lease) on one
/// database. Feedback written to all three trains one round per trigger fleet-wide; every instance serves each
/// promotion within 5 s; a rollback on one reaches all; SIGKILL of the trainer mid-round hands training to another
/// instance within the lease timeout; no acknowledged record is lost and no version is promoted twice.
/// </summary>
[Collection(PostgreSqlCollection.Name)]
public sealed class FleetTests(PostgreSqlServer server, ITestOutputHelper output) : IDisposable
{
    private const int LeaseMs = 3000;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(180); // a hang guard for shared CI machines (test projects run in parallel on 2 cores)
    private static readonly TimeSpan Propagation = TimeSpan.FromSeconds(5);
    private readonly TempDir _dir = new();
    private readonly List<FleetInstance> _instances = [];

    public void Dispose()
    {
        foreach (var i in _instances) i.Dispose();
        _dir.Dispose();
    }

    [SkippableFact]
    public async Task Three_instances_share_feedback_one_trainer_promotions_rollbacks_and_a_takeover_after_SIGKILL()
    {
        PostgreSqlServer.SkipIfUnavailable();
        var clock = Stopwatch.StartNew();
        var cs = server.CreateDatabase();
        var artifacts = Clusters.WriteArtifacts(_dir.Sub("artifacts"));
        foreach (var name in new[] { "a", "b", "c" })
            _instances.Add(FleetInstance.Start(name, artifacts, _dir.Sub("store-" + name), cs, name,
                "--lease-ms", LeaseMs.ToString(CultureInfo.InvariantCulture), "--poll-ms", "1000", "--epochs", "20"));
        foreach (var i in _instances) Assert.Equal("READY base", await i.WaitForLineAsync(l => l.StartsWith("READY ", StringComparison.Ordinal), Timeout));
        var trainer = await FirstAsync(_instances, l => l.StartsWith("LEASE ", StringComparison.Ordinal));
        output.WriteLine($"all three ready at {clock.Elapsed.TotalSeconds:F1} s; trainer: {trainer.Name}");

        // 1. Feedback to all three instances: exactly one round, on the trainer, promotes version 1; all serve it within 5 s.
        var accepted = new List<string>();
        var propagation = new List<double>();
        accepted.AddRange(await FeedAllAsync(_instances, 1));
        propagation.Add(await PromotionReachesAllAsync(trainer, _instances, 1));
        // 2. And again: version 2.
        accepted.AddRange(await FeedAllAsync(_instances, 2));
        propagation.Add(await PromotionReachesAllAsync(trainer, _instances, 2));
        await Task.Delay(1000); // room for a stray extra round to show up
        Assert.Equal(2, RoundsStarted(_instances));
        Assert.All(_instances.Where(i => i != trainer), i => Assert.DoesNotContain(i.Lines(), l => l.StartsWith("ROUND_STARTED ", StringComparison.Ordinal)));

        // 3. A rollback on a serving-only instance reaches every instance.
        var follower = _instances.First(i => i != trainer);
        var mark = _instances.ToDictionary(i => i, i => i.Lines().Count);
        follower.Send("rollback 1");
        var rolledBack = await follower.WaitForLineAsync(l => l.StartsWith("ROLLED_BACK ", StringComparison.Ordinal) || l.StartsWith("ERROR ", StringComparison.Ordinal), Timeout, mark[follower]);
        Assert.StartsWith("ROLLED_BACK 1 ", rolledBack, StringComparison.Ordinal);
        var rollbackAt = long.Parse(rolledBack.Split(' ')[2], CultureInfo.InvariantCulture);
        var rollbackReach = 0.0;
        foreach (var i in _instances)
        {
            var swapped = await i.WaitForLineAsync(l => l.StartsWith("SWAPPED 1 ", StringComparison.Ordinal), Timeout, mark[i]);
            rollbackReach = Math.Max(rollbackReach, long.Parse(swapped.Split(' ')[2], CultureInfo.InvariantCulture) - rollbackAt);
        }
        Assert.True(rollbackReach <= Propagation.TotalMilliseconds, $"the rollback took {rollbackReach} ms to reach every instance");

        // 4. Kill the trainer with SIGKILL in the middle of a round: a survivor takes the lease over within the lease timeout and trains.
        mark = _instances.ToDictionary(i => i, i => i.Lines().Count);
        var killedRoundFeed = await FeedAllAsync(_instances, 3, waitForFed: false);
        await trainer.WaitForLineAsync(l => l.StartsWith("ROUND_STARTED ", StringComparison.Ordinal), Timeout, mark[trainer]);
        var killedAt = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        trainer.Kill();
        await trainer.WaitForExitAsync(Timeout);
        var survivors = _instances.Where(i => i != trainer).ToList();
        foreach (var s in survivors) await s.WaitForLineAsync(l => l == "FED", Timeout, mark[s]);
        accepted.AddRange(AcceptedIds(trainer, mark[trainer]));
        accepted.AddRange(survivors.SelectMany(s => AcceptedIds(s, mark[s])));
        var killedRoundCompleted = trainer.Lines().Skip(mark[trainer]).Any(l => l.StartsWith("ROUND_COMPLETED ", StringComparison.Ordinal));
        var next = await FirstAsync(survivors, l => l.StartsWith("LEASE ", StringComparison.Ordinal));
        var takeover = long.Parse(next.Lines().First(l => l.StartsWith("LEASE ", StringComparison.Ordinal)).Split(' ')[1], CultureInfo.InvariantCulture) - killedAt;
        Assert.True(takeover <= LeaseMs + 1500, $"the lease was taken over {takeover} ms after the kill (lease {LeaseMs} ms)");
        var expected = killedRoundCompleted ? 4 : 3;
        if (killedRoundCompleted) accepted.AddRange(await FeedAllAsync(survivors, 4));
        propagation.Add(await PromotionReachesAllAsync(next, survivors, expected, mark));
        output.WriteLine($"killed trainer {trainer.Name} {(killedRoundCompleted ? "after" : "during")} its round; {next.Name} took the lease over {takeover} ms later and promoted version {expected}");

        // 5. Nothing acknowledged was lost, and every promotion happened once.
        await using var c = new NpgsqlConnection(cs);
        await c.OpenAsync();
        var stored = new HashSet<string>(StringComparer.Ordinal);
        await using (var cmd = new NpgsqlCommand("SELECT id FROM onnxtune.feedback UNION ALL SELECT id FROM onnxtune.quarantine;", c))
        await using (var r = await cmd.ExecuteReaderAsync())
            while (await r.ReadAsync()) stored.Add(r.GetString(0));
        var lost = accepted.Where(id => !stored.Contains(id)).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} of {accepted.Count} acknowledged records are missing: {string.Join(", ", lost.Take(5))}");
        var promotions = new List<(int Version, string Holder, long Token)>();
        await using (var cmd = new NpgsqlCommand("SELECT version, holder, token FROM onnxtune.promotions ORDER BY version;", c))
        await using (var r = await cmd.ExecuteReaderAsync())
            while (await r.ReadAsync()) promotions.Add((r.GetInt32(0), r.GetString(1), r.GetInt64(2)));
        var promotedLines = _instances.SelectMany(i => i.Lines().Where(l => l.StartsWith("PROMOTED ", StringComparison.Ordinal))).ToList();
        Assert.Equal(Enumerable.Range(1, expected), promotions.Select(p => p.Version));
        Assert.Equal(promotions.Count, promotedLines.Count);
        Assert.Equal(promotedLines.Count, promotedLines.Distinct().Count());
        // The takeover's promotion carries a newer fencing token than every promotion of the killed trainer.
        Assert.True(promotions[^1].Token > promotions[0].Token, $"tokens: {string.Join(", ", promotions.Select(p => p.Token))}");

        output.WriteLine($"propagation of promotions to every instance: {string.Join(", ", propagation.Select(p => $"{p:F0} ms"))}; rollback reached all in {rollbackReach:F0} ms; takeover {takeover} ms after SIGKILL (lease {LeaseMs} ms); {accepted.Count} acknowledged records all stored; {promotions.Count} promotions, once each; {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var s in survivors) s.Send("exit");
        foreach (var s in survivors) await s.WaitForExitAsync(Timeout);
    }

    private static int RoundsStarted(IEnumerable<FleetInstance> instances) =>
        instances.Sum(i => i.Lines().Count(l => l.StartsWith("ROUND_STARTED ", StringComparison.Ordinal)));

    private static IEnumerable<string> AcceptedIds(FleetInstance i, int from) =>
        i.Lines().Skip(from).Where(l => l.StartsWith("ACCEPTED ", StringComparison.Ordinal)).Select(l => l["ACCEPTED ".Length..]);

    /// <summary>Sends 16 records to each instance (distinct seeds per phase and instance) and returns the acknowledged ids.</summary>
    private static async Task<List<string>> FeedAllAsync(IReadOnlyList<FleetInstance> instances, int phase, bool waitForFed = true)
    {
        var marks = instances.Select(i => i.Lines().Count).ToArray();
        for (var k = 0; k < instances.Count; k++) instances[k].Send($"feed 16 {phase * 10 + k}");
        if (!waitForFed) return [];
        var ids = new List<string>();
        for (var k = 0; k < instances.Count; k++)
        {
            await instances[k].WaitForLineAsync(l => l == "FED", Timeout, marks[k]);
            ids.AddRange(AcceptedIds(instances[k], marks[k]));
        }
        return ids;
    }

    /// <summary>Waits until <paramref name="trainer"/> promotes <paramref name="version"/> and every instance swapped to it; returns the spread in ms.</summary>
    private async Task<double> PromotionReachesAllAsync(FleetInstance trainer, IReadOnlyList<FleetInstance> instances, int version, Dictionary<FleetInstance, int>? from = null)
    {
        var promoted = await trainer.WaitForLineAsync(l => l.StartsWith("PROMOTED ", StringComparison.Ordinal) || l.StartsWith("ROUND_COMPLETED ", StringComparison.Ordinal) && !l.Contains(" Promoted", StringComparison.Ordinal), Timeout, from?[trainer] ?? 0);
        Assert.True(promoted.StartsWith("PROMOTED ", StringComparison.Ordinal), $"{trainer.Name}: {promoted}\n{trainer.Diagnostics()}");
        await trainer.WaitForLineAsync(l => l == $"PROMOTED {version}", Timeout, from?[trainer] ?? 0);
        long Swap(FleetInstance i, string line) => long.Parse(line.Split(' ')[2], CultureInfo.InvariantCulture);
        var at = Swap(trainer, await trainer.WaitForLineAsync(l => l.StartsWith($"SWAPPED {version} ", StringComparison.Ordinal), Timeout, from?[trainer] ?? 0));
        var spread = 0.0;
        foreach (var i in instances)
        {
            var line = await i.WaitForLineAsync(l => l.StartsWith($"SWAPPED {version} ", StringComparison.Ordinal), Timeout, from?[i] ?? 0);
            spread = Math.Max(spread, Swap(i, line) - at);
        }
        Assert.True(spread <= Propagation.TotalMilliseconds, $"version {version} reached every instance only after {spread} ms");
        output.WriteLine($"version {version} promoted by {trainer.Name}; served by all {instances.Count} within {spread:F0} ms");
        return spread;
    }

    private static async Task<FleetInstance> FirstAsync(IReadOnlyList<FleetInstance> instances, Func<string, bool> match)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (true)
        {
            if (instances.FirstOrDefault(i => i.Lines().Any(match)) is { } hit) return hit;
            Assert.True(DateTime.UtcNow < deadline, "no instance printed the expected line; " + string.Join("\n\n", instances.Select(i => i.Diagnostics())));
            await Task.Delay(10);
        }
    }
}
