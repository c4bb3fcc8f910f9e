using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests;

public sealed class FineTuningBackgroundServiceTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static async Task<HealthReport> HealthAsync(Harness h) =>
        await h.Host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

    [Fact]
    public async Task Rounds_promote_a_better_candidate_keep_serving_after_failure_and_reject_a_worse_one()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round);
        Assert.Null(h.Handle.ServingVersion);
        Assert.Equal(0, h.PredictedClass());
        var swaps = new List<ModelSwappedEventArgs>();
        var rejected = new List<CandidateRejectedEventArgs>();
        h.Events.ModelSwapped += (_, e) => swaps.Add(e);
        h.Events.CandidateRejected += (_, e) => rejected.Add(e);

        // 1: feedback says class 2; the candidate favours class 2 and wins on held-out data.
        await h.WriteFeedbackAsync(30, label: 2, seed: 1);
        round.Then(2);
        var r1 = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Promoted, r1.Outcome);
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Equal(2, h.PredictedClass());
        Assert.Equal(1.0, r1.Decision!.Candidate.HeldOutMetric);
        Assert.Equal(0.0, r1.Decision.Serving.HeldOutMetric);
        Assert.All(round.Inputs[0].NewFeedback, r => Assert.False(r.HeldOut));
        Assert.Empty(round.Inputs[0].ReplaySample);
        Assert.Equal(1, round.Inputs[0].ThreadBudget);
        Assert.EndsWith(Path.Combine("artifacts", "checkpoint"), round.Inputs[0].ServingCheckpointPath, StringComparison.Ordinal);
        Assert.Equal(1, Assert.Single(swaps).Version);
        Assert.Equal(1, h.Versions.GetCurrent()!.Version);
        Assert.Equal("healthy", (await HealthAsync(h)).Status.ToString().ToLowerInvariant());

        // 2: the round throws; serving stays on version 1 and health degrades.
        await h.WriteFeedbackAsync(30, label: 2, seed: 2);
        round.ThenThrow("engine exploded");
        var r2 = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Failed, r2.Outcome);
        Assert.Equal("engine exploded", r2.Error!.Message);
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Equal(2, h.PredictedClass());
        var health = await HealthAsync(h);
        Assert.Equal(HealthStatus.Degraded, health.Status);
        Assert.Equal("1", health.Entries["onnxtune"].Data["serving_version"]);
        Assert.Equal("Failed", health.Entries["onnxtune"].Data["last_round_outcome"]);

        // 3: the failed round's feedback is still new; a candidate favouring class 1 is worse and is rejected.
        round.Then(1);
        var r3 = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Rejected, r3.Outcome);
        Assert.Equal(round.Inputs[1].NewFeedback.Select(r => r.Id), round.Inputs[2].NewFeedback.Select(r => r.Id));
        Assert.NotEmpty(round.Inputs[2].ReplaySample);
        Assert.EndsWith(Path.Combine("v000001", "checkpoint"), round.Inputs[2].ServingCheckpointPath, StringComparison.Ordinal);
        Assert.Contains(Assert.Single(rejected).Decision.Reasons, r => r.StartsWith("held-out:", StringComparison.Ordinal));
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Equal([1], h.Versions.ListVersions().Select(v => v.Version));
        Assert.False(Directory.Exists(h.Service.RoundsRoot) && Directory.EnumerateFileSystemEntries(h.Service.RoundsRoot).Any());
    }

    [Fact]
    public async Task A_restarted_host_serves_the_last_promoted_version_at_once_and_keeps_all_feedback()
    {
        var round = new ScriptedRound();
        await using (var h = await Harness.StartAsync(_dir, round))
        {
            await h.WriteFeedbackAsync(30, label: 2, seed: 3);
            round.Then(2);
            Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
            await h.WriteFeedbackAsync(5, label: 1, seed: 4);
        }
        await using var again = await Harness.StartAsync(_dir, new ScriptedRound());
        Assert.Equal(1, again.Handle.ServingVersion);
        Assert.Equal(2, again.PredictedClass());
        Assert.Equal(35, await again.Store.GetLatestSequenceAsync());
        Assert.Equal(35, (await again.Store.GetTrainingSinceAsync(0, 100)).Count + (await again.Store.GetHeldOutAsync(100)).Count);
    }

    [Fact]
    public async Task Cancelling_a_round_at_shutdown_leaves_no_partial_state()
    {
        var round = new ScriptedRound();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        round.Script.Enqueue(async (input, ct) =>
        {
            File.WriteAllText(Path.Combine(input.WorkingDirectory, "partial.bin"), "half");
            started.SetResult();
            await Task.Delay(Timeout.Infinite, ct);
            return 2;
        });
        var h = await Harness.StartAsync(_dir, round);
        await h.WriteFeedbackAsync(30, label: 2, seed: 5);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!started.Task.IsCompleted)
        {
            Assert.True(DateTime.UtcNow < deadline);
            h.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.WhenAny(started.Task, Task.Delay(20));
        }
        var roundsRoot = h.Service.RoundsRoot;
        Assert.NotEmpty(Directory.EnumerateFileSystemEntries(roundsRoot, "*", SearchOption.AllDirectories));
        await h.DisposeAsync();
        Assert.Empty(Directory.EnumerateFileSystemEntries(roundsRoot));
        Assert.Empty(Directory.EnumerateDirectories(_dir.Sub(Path.Combine("store", "versions"))));
        using var store = new SqliteFeedbackStore(_dir.Sub(Path.Combine("store", "feedback.db")));
        Assert.Null(await store.GetStateAsync(FineTuningBackgroundService.WatermarkKey));
    }

    [Fact]
    public async Task Triggers_respect_min_feedback_max_interval_and_idle_window()
    {
        await using var h = await Harness.StartAsync(_dir, new ScriptedRound(), o =>
        {
            o.MinNewFeedback = 10;
            o.MaxInterval = TimeSpan.FromMinutes(10);
            o.OnlyWhenIdle = true;
            o.IdleWindow = TimeSpan.FromMinutes(1);
            o.HeldOutShare = 0;
        });
        var svc = h.Service;
        // Only the trigger logic is under test: stop the loop so its own round cannot reset the interval during the time jumps.
        await svc.StopAsync(default);
        Assert.False(await svc.ShouldRunAsync(default)); // nothing new
        await h.WriteFeedbackAsync(6, label: 1, seed: 6);
        Assert.Equal(6, await h.Store.CountTrainingSinceAsync(0));
        Assert.False(await svc.ShouldRunAsync(default)); // too few, interval not reached
        h.Time.Advance(TimeSpan.FromMinutes(11));
        Assert.True(await svc.ShouldRunAsync(default)); // max interval passed with pending feedback
        h.PredictedClass();
        Assert.False(await svc.ShouldRunAsync(default)); // just used: not idle
        h.Time.Advance(TimeSpan.FromSeconds(61));
        Assert.True(await svc.ShouldRunAsync(default));
    }

    [Fact]
    public async Task Deleted_users_feedback_is_not_trained_on()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round);
        await h.WriteFeedbackAsync(12, label: 2, seed: 7, user: "alice");
        await h.WriteFeedbackAsync(30, label: 2, seed: 8, user: "bob");
        Assert.Equal(12, await h.Store.DeleteUserAsync("alice"));
        round.Then(2);
        await h.NextRoundAsync();
        Assert.NotEmpty(round.Inputs[0].NewFeedback);
        Assert.All(round.Inputs[0].NewFeedback, r => Assert.Equal("bob", r.UserId));
    }

    [Fact]
    public async Task Rollback_swaps_the_serving_session_to_the_kept_version()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        await h.WriteFeedbackAsync(30, label: 2, seed: 9);
        round.Then(2);
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        await h.WriteFeedbackAsync(30, label: 2, seed: 10);
        round.Then(2);
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        Assert.Equal(2, h.Handle.ServingVersion);
        await h.Versions.RollbackAsync(1);
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Equal(1, h.Versions.GetCurrent()!.Version);
    }
}
