using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using OnnxTune.Hosting.Internal;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Hosting.Tests.Hardening;

/// <summary>Rounds that meet bad records, rollbacks, deletions, failing stores and bad candidates.</summary>
public sealed class RoundSafetyTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static async Task<HealthReport> HealthAsync(Harness h) =>
        await h.Host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

    private static FeedbackRecord Raw(string id, TensorData x, long label = 2, string? user = null) =>
        new() { Id = id, CreatedAt = DateTimeOffset.UnixEpoch, Tensors = new Dictionary<string, TensorData> { ["x"] = x }, LabelIndex = label, UserId = user };

    /// <summary>A round script that blocks until released, so that the test can act while the round runs.</summary>
    private static (TaskCompletionSource Started, TaskCompletionSource Release) Blocking(ScriptedRound round, int favoured)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        round.Script.Enqueue(async (_, ct) =>
        {
            started.TrySetResult();
            await release.Task.WaitAsync(ct);
            return favoured;
        });
        return (started, release);
    }

    private static async Task AdvanceUntilAsync(Harness h, Task task)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!task.IsCompleted)
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out");
            h.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.WhenAny(task, Task.Delay(20));
        }
    }

    private static async Task<RoundCompletedEventArgs> CompleteBlockedRoundAsync(Harness h, TaskCompletionSource release)
    {
        var done = new TaskCompletionSource<RoundCompletedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Events.RoundCompleted += (_, e) => done.TrySetResult(e);
        release.SetResult();
        return await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_poison_record_stored_behind_the_writer_is_quarantined_and_the_round_still_promotes()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.HeldOutShare = 0.3);
        // Written straight into the store (as by an older app version): a leading dim of 2 and a value that overflows AdamW.
        var poison1 = await h.Store.AppendAsync(Raw("poison-batch", TensorData.Float([1, 2, 3, 4, 5, 6, 7, 8], 2, 4)));
        var poison2 = await h.Store.AppendAsync(Raw("poison-huge", TensorData.Float([3e38f, 0, 0, 0], 1, 4)));
        await h.WriteFeedbackAsync(30, label: 2, seed: 1);
        round.Then(2);
        var r1 = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Promoted, r1.Outcome);
        Assert.DoesNotContain(round.Inputs[0].NewFeedback.Concat(round.Inputs[0].ReplaySample), r => r.Sequence == poison1 || r.Sequence == poison2);
        var quarantined = await h.Admin.ListQuarantinedAsync();
        Assert.Equal([poison1, poison2], quarantined.Select(q => q.Sequence));
        Assert.Contains("leading (batch) dim must be 1", quarantined[0].Reason, StringComparison.Ordinal);
        Assert.Contains("MaxFeedbackValue", quarantined[1].Reason, StringComparison.Ordinal);
        Assert.True(await h.Admin.DeleteQuarantinedAsync(poison1));
        Assert.False(await h.Admin.DeleteQuarantinedAsync(poison1));
        Assert.Single(await h.Admin.ListQuarantinedAsync());
    }

    [Fact]
    public async Task A_record_the_engine_cannot_encode_is_quarantined_and_the_next_round_promotes()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round);
        await h.WriteFeedbackAsync(30, label: 2, seed: 2);
        // Round 1: the engine reports one record as unusable, then fails outright (as the default engine would have).
        round.Script.Enqueue((input, _) =>
        {
            input.RecordFailed!(input.NewFeedback[3], new OnnxTuneException("tokenizer exploded"));
            throw new OnnxTuneException("round failed after the bad record");
        });
        var r1 = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Failed, r1.Outcome);
        var bad = round.Inputs[0].NewFeedback[3];
        var q = Assert.Single(await h.Admin.ListQuarantinedAsync());
        Assert.Equal(bad.Sequence, q.Sequence);
        Assert.Contains("tokenizer exploded", q.Reason, StringComparison.Ordinal);
        // Round 2 trains without it and promotes.
        round.Then(2);
        var r2 = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Promoted, r2.Outcome);
        Assert.DoesNotContain(round.Inputs[1].NewFeedback, r => r.Sequence == bad.Sequence);
        Assert.Equal(round.Inputs[0].NewFeedback.Count - 1, round.Inputs[1].NewFeedback.Count);
    }

    [Fact]
    public async Task A_rollback_during_a_round_stays_in_force_and_the_candidate_is_discarded()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        await h.WriteFeedbackAsync(30, label: 2, seed: 3);
        round.Then(2);
        Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        await h.WriteFeedbackAsync(30, label: 2, seed: 4);
        round.Then(2);
        Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        Assert.Equal(2, h.Handle.ServingVersion);

        await h.WriteFeedbackAsync(30, label: 2, seed: 5);
        var (started, release) = Blocking(round, 2);
        await AdvanceUntilAsync(h, started.Task);
        await h.Versions.RollbackAsync(1);
        var r = await CompleteBlockedRoundAsync(h, release);

        Assert.Equal(RoundOutcome.Rejected, r.Outcome);
        Assert.Contains(r.Decision!.Reasons, x => x.StartsWith("promotion:", StringComparison.Ordinal) && x.Contains("changed from 2 to 1", StringComparison.Ordinal));
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Equal(1, h.Versions.GetCurrent()!.Version);
        // Its feedback is new again: the next round trains on it from version 1.
        round.Then(2);
        Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        Assert.Equal(round.Inputs[2].NewFeedback.Select(x => x.Id), round.Inputs[3].NewFeedback.Select(x => x.Id));
        Assert.EndsWith(Path.Combine("v000001", "checkpoint"), round.Inputs[3].ServingCheckpointPath, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_delete_during_a_round_discards_the_candidate_and_provenance_finds_and_retires_affected_versions()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        await h.WriteFeedbackAsync(20, label: 2, seed: 6, user: "alice");
        await h.WriteFeedbackAsync(20, label: 2, seed: 7, user: "bob");
        var (started, release) = Blocking(round, 2);
        await AdvanceUntilAsync(h, started.Task);
        Assert.Contains(round.Inputs[0].NewFeedback, x => x.UserId == "alice");
        var during = await h.Admin.DeleteUserAsync("alice");
        Assert.True(during.DeletedRecords > 0);
        Assert.Empty(during.AffectedVersions);
        var r = await CompleteBlockedRoundAsync(h, release);
        Assert.Equal(RoundOutcome.Rejected, r.Outcome);
        Assert.Contains(r.Decision!.Reasons, x => x.StartsWith("promotion:", StringComparison.Ordinal) && x.Contains("deleted during the round", StringComparison.Ordinal));
        Assert.Null(h.Handle.ServingVersion);

        // The next round trains on bob's records only and promotes; its provenance names bob's keyed hash, not his id.
        round.Then(2);
        Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        Assert.All(round.Inputs[1].NewFeedback, x => Assert.Equal("bob", x.UserId));
        var v1 = h.Versions.GetCurrent()!;
        var provenance = ModelVersionStore.ReadProvenance(v1)!;
        Assert.Equal(await h.Store.GetLatestSequenceAsync(), provenance.UpToSequence);
        Assert.Equal([((IFeedbackMaintenance)h.Store).HashUserId("bob")], provenance.UserHashes);
        Assert.DoesNotContain("bob", File.ReadAllText(v1.ProvenancePath), StringComparison.Ordinal);

        var deletion = await h.Admin.DeleteUserAsync("bob");
        Assert.Equal([1], deletion.AffectedVersions);
        Assert.Null(await h.Admin.RetireVersionAsync(1, "trained on deleted user bob"));
        Assert.Null(h.Handle.ServingVersion);
        Assert.Empty(h.Versions.ListVersions());
        await Assert.ThrowsAsync<ModelVersionNotFoundException>(() => h.Versions.RollbackAsync(1));
    }

    [Fact]
    public async Task A_candidate_with_infinite_optimizer_state_is_rejected_by_the_finite_gate()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        await h.WriteFeedbackAsync(30, label: 2, seed: 8);
        round.Script.Enqueue((input, _) =>
        {
            // The weights stay finite (ScriptedRound writes them); AdamW's second moment overflowed.
            var ckpt = Directory.CreateDirectory(Path.Combine(input.WorkingDirectory, "checkpoint")).FullName;
            new SafeTensorsFile([SafeTensor.FromFloats("W", new float[12], 4, 3), SafeTensor.FromFloats("W.exp_avg_sq", [0, 1, float.PositiveInfinity, 0], 4)])
                .Write(Path.Combine(ckpt, "tensors.safetensors"));
            return Task.FromResult(2);
        });
        var r = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Rejected, r.Outcome);
        Assert.Contains(r.Decision!.Reasons, x => x.StartsWith("finite:", StringComparison.Ordinal));
    }

    [Fact]
    public void The_checkpoint_finite_check_names_the_optimizer_state_tensor()
    {
        var dir = Directory.CreateDirectory(_dir.Sub("ckpt")).FullName;
        Assert.Null(CheckpointFiniteCheck.FindNonFinite(dir));
        new SafeTensorsFile([SafeTensor.FromFloats("W", [1, 2], 2), SafeTensor.FromFloats("W.exp_avg_sq", [0, float.NaN], 2)]).Write(Path.Combine(dir, "tensors.safetensors"));
        Assert.Equal("checkpoint tensor 'W.exp_avg_sq' has NaN at flat index 1", CheckpointFiniteCheck.FindNonFinite(dir));
        File.WriteAllBytes(Path.Combine(dir, "tensors.safetensors"), [1, 2, 3]);
        Assert.StartsWith("the checkpoint cannot be read", CheckpointFiniteCheck.FindNonFinite(dir), StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_loop_survives_a_failing_store_with_backoff_and_reports_it()
    {
        FlakyStore? flaky = null;
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MaxInterval = TimeSpan.FromMinutes(10), services: s =>
            s.AddKeyedSingleton<IFeedbackStore>("", (sp, _) => flaky = new FlakyStore(new SqliteFeedbackStore(_dir.Sub(Path.Combine("store", "feedback.db"))))));
        await h.WriteFeedbackAsync(30, label: 2, seed: 9);
        flaky!.Failing = true;
        // 60 s of (fake) time at a 1 s check interval: a hot loop would check 60 times; backoff doubles the wait.
        for (var i = 0; i < 60; i++)
        {
            h.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(15);
        }
        Assert.InRange(flaky.FailedCalls, 2, 8);
        var health = await HealthAsync(h);
        Assert.Equal(HealthStatus.Degraded, health.Status);
        Assert.Contains("Busy", (string)health.Entries["onnxtune"].Data["loop_error"], StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(8), h.Service.NextDelay(3));
        Assert.Equal(TimeSpan.FromMinutes(10), h.Service.NextDelay(40));

        flaky.Failing = false;
        round.Then(2);
        Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(h)).Status);
    }

    [Fact]
    public async Task Rounds_failing_in_a_row_back_off_and_make_the_model_unhealthy_until_one_succeeds()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MaxInterval = TimeSpan.FromMinutes(30));
        await h.WriteFeedbackAsync(30, label: 2, seed: 10);
        for (var i = 0; i < ModelHealth.UnhealthyFailedRounds; i++)
        {
            round.ThenThrow($"boom {i}");
            Assert.Equal(RoundOutcome.Failed, (await h.NextRoundAsync()).Outcome);
        }
        var health = await HealthAsync(h);
        Assert.Equal(HealthStatus.Unhealthy, health.Status);
        Assert.Equal(ModelHealth.UnhealthyFailedRounds, health.Entries["onnxtune"].Data["consecutive_failed_rounds"]);
        Assert.Contains("rounds failed in a row", health.Entries["onnxtune"].Description, StringComparison.Ordinal);
        round.Then(2);
        Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(h)).Status);
    }

    [Fact]
    public async Task A_damaged_round_counter_or_watermark_does_not_stop_the_loop()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round);
        await h.Store.SetStateAsync(FineTuningBackgroundService.RoundKey, "not a number");
        await h.Store.SetStateAsync(FineTuningBackgroundService.WatermarkKey, "-x");
        await h.WriteFeedbackAsync(30, label: 2, seed: 11);
        round.Then(2);
        Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
    }

    [Fact]
    public async Task Start_serves_the_newest_older_version_that_loads_with_an_event_not_the_base_model()
    {
        var round = new ScriptedRound();
        await using (var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0))
        {
            await h.WriteFeedbackAsync(30, label: 2, seed: 12);
            round.Then(2);
            Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
            await h.WriteFeedbackAsync(30, label: 2, seed: 13);
            round.Then(2);
            Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        }
        // Version 2's model is damaged on disk (a bad sector, a hand edit).
        File.WriteAllBytes(Path.Combine(_dir.Sub("store"), "versions", "v000002", ModelVersionStore.ModelFileName), [1, 2, 3]);
        await using var again = await Harness.StartAsync(_dir, new ScriptedRound());
        Assert.Equal(1, again.Handle.ServingVersion);
        Assert.Equal(2, again.PredictedClass());
        var health = await HealthAsync(again);
        Assert.Equal(HealthStatus.Degraded, health.Status);
        Assert.Contains("serving 1", (string)health.Entries["onnxtune"].Data["serving_fallback"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_fallback_event_names_the_requested_and_served_versions()
    {
        var round = new ScriptedRound();
        await using (var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0))
        {
            await h.WriteFeedbackAsync(30, label: 2, seed: 14);
            round.Then(2);
            Harness.AssertOutcome(RoundOutcome.Promoted, await h.NextRoundAsync());
        }
        // The pointer names a version that is not on disk (a lost rename after power loss).
        File.WriteAllText(Path.Combine(_dir.Sub("store"), "versions", ModelVersionStore.CurrentFileName), "7");
        var events = new List<ServingFallbackEventArgs>();
        await using var again = await Harness.StartAsync(_dir, new ScriptedRound(), services: s => s.AddSingleton(_ =>
        {
            var e = new FineTuningEvents();
            e.ServingFallback += (_, a) => events.Add(a);
            return e;
        }));
        Assert.Equal(1, again.Handle.ServingVersion);
        var ev = Assert.Single(events);
        Assert.Equal((7, (int?)1), (ev.RequestedVersion, ev.ServedVersion));
        Assert.Contains("missing", ev.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Two_models_sharing_a_store_folder_or_database_are_rejected_at_start()
    {
        TestModels.WriteArtifacts(_dir.Sub("artifacts"));
        var builder = Microsoft.Extensions.Hosting.Host.CreateEmptyApplicationBuilder(new());
        builder.Services.AddOnDeviceFineTuning("a", o => { o.ArtifactsPath = _dir.Sub("artifacts"); o.ModelStorePath = _dir.Sub("s1"); });
        builder.Services.AddOnDeviceFineTuning("b", o => { o.ArtifactsPath = _dir.Sub("artifacts"); o.ModelStorePath = _dir.Sub("s1"); });
        builder.Services.AddOnDeviceFineTuning("c", o =>
        {
            o.ArtifactsPath = _dir.Sub("artifacts");
            o.ModelStorePath = _dir.Sub("s3");
            o.FeedbackDatabasePath = Path.Combine(_dir.Sub("s1"), "feedback.db");
        });
        using var host = builder.Build();
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains(e.Failures, f => f.Contains("OnDeviceFineTuning:a:ModelStorePath", StringComparison.Ordinal) && f.Contains("model 'b'", StringComparison.Ordinal));
        // Start-up validation stops at the first model that fails; its failures name every model it collides with.
        Assert.Contains(e.Failures, f => f.Contains("OnDeviceFineTuning:a:FeedbackDatabasePath", StringComparison.Ordinal) && f.Contains("model 'c'", StringComparison.Ordinal));
    }

    /// <summary>Fails every trigger check with a typed busy error while <see cref="Failing"/> is set.</summary>
    private sealed class FlakyStore(SqliteFeedbackStore inner) : IFeedbackStore, IFeedbackMaintenance, IDisposable
    {
        private int _failed;

        public volatile bool Failing;

        public int FailedCalls => Volatile.Read(ref _failed);

        public ValueTask<long> AppendAsync(FeedbackRecord record, CancellationToken cancellationToken = default) => inner.AppendAsync(record, cancellationToken);
        public ValueTask<long> GetLatestSequenceAsync(CancellationToken cancellationToken = default) => inner.GetLatestSequenceAsync(cancellationToken);

        public ValueTask<long> CountTrainingSinceAsync(long afterSequence, CancellationToken cancellationToken = default)
        {
            if (!Failing) return inner.CountTrainingSinceAsync(afterSequence, cancellationToken);
            Interlocked.Increment(ref _failed);
            throw new FeedbackStoreException(FeedbackStoreErrorKind.Busy, inner.Path, "read", "database is locked (test)");
        }

        public ValueTask<IReadOnlyList<FeedbackRecord>> GetTrainingSinceAsync(long afterSequence, long upToSequence, CancellationToken cancellationToken = default) => inner.GetTrainingSinceAsync(afterSequence, upToSequence, cancellationToken);
        public ValueTask<IReadOnlyList<FeedbackRecord>> GetReplaySampleAsync(long upToSequence, int count, int seed, CancellationToken cancellationToken = default) => inner.GetReplaySampleAsync(upToSequence, count, seed, cancellationToken);
        public ValueTask<IReadOnlyList<FeedbackRecord>> GetHeldOutAsync(long upToSequence, CancellationToken cancellationToken = default) => inner.GetHeldOutAsync(upToSequence, cancellationToken);
        public ValueTask<int> DeleteUserAsync(string userId, CancellationToken cancellationToken = default) => inner.DeleteUserAsync(userId, cancellationToken);
        public ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, CancellationToken cancellationToken = default) => inner.DeleteOlderThanAsync(cutoff, cancellationToken);
        public ValueTask<string?> GetStateAsync(string key, CancellationToken cancellationToken = default) => inner.GetStateAsync(key, cancellationToken);
        public ValueTask SetStateAsync(string key, string value, CancellationToken cancellationToken = default) => inner.SetStateAsync(key, value, cancellationToken);
        public ValueTask<bool> QuarantineAsync(long sequence, string reason, CancellationToken cancellationToken = default) => inner.QuarantineAsync(sequence, reason, cancellationToken);
        public ValueTask<IReadOnlyList<QuarantinedFeedback>> ListQuarantinedAsync(CancellationToken cancellationToken = default) => inner.ListQuarantinedAsync(cancellationToken);
        public ValueTask<bool> DeleteQuarantinedAsync(long sequence, CancellationToken cancellationToken = default) => inner.DeleteQuarantinedAsync(sequence, cancellationToken);
        public ValueTask<IReadOnlyList<long>> GetMissingAsync(IReadOnlyCollection<long> sequences, CancellationToken cancellationToken = default) => inner.GetMissingAsync(sequences, cancellationToken);
        public ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, long atOrBelowSequence, CancellationToken cancellationToken = default) => inner.DeleteOlderThanAsync(cutoff, atOrBelowSequence, cancellationToken);
        public string HashUserId(string userId) => inner.HashUserId(userId);
        public void Dispose() => inner.Dispose();
    }
}
