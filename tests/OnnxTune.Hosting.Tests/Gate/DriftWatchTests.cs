using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using OnnxTune.Hosting.Internal;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Tests.Gate;

/// <summary>After a promotion the drift watch compares the new version's live signals with its predecessor's.</summary>
public sealed class DriftWatchTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static async Task PredictAsync(Harness h, int count, int seed)
    {
        var rng = new Random(seed);
        for (var i = 0; i < count; i++) h.Handle.Predict(TestModels.Input(TestModels.X(rng)));
        await Task.Yield();
    }

    /// <summary>A user correction of a prediction served by <paramref name="version"/> (it said 0, the user says 1).</summary>
    private static Task Correct(Harness h, int? version, Random rng) =>
        h.Writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TestModels.X(rng)), 1) with { Prediction = new PredictionReference(version, 0) }).AsTask();

    [Fact]
    public async Task A_version_users_correct_far_more_often_than_its_predecessor_is_rolled_back_automatically()
    {
        var round = new ScriptedRound();
        // Rounds run only when the test advances the fake clock (NextRoundAsync); corrections start none of their own.
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        var watch = h.Host.Services.GetRequiredKeyedService<DriftWatch>(h.Name);
        var detections = new List<DriftDetectedEventArgs>();
        var detected = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Events.DriftDetected += (_, e) => { detections.Add(e); detected.TrySetResult(); };
        using var listener = new MeterListener();
        long counted = 0;
        listener.InstrumentPublished = (i, l) => { if (i.Meter.Name == "OnnxTune" && i.Name == "onnxtune.drift.detections") l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<long>((_, v, _, _) => Interlocked.Add(ref counted, v));
        listener.Start();

        // The base model serves 150 predictions; users correct 3 of them (2%). Corrections do not count as
        // predictions, and feedback without a Prediction is not a correction of anyone.
        var rng = new Random(7);
        await PredictAsync(h, 150, seed: 1);
        for (var i = 0; i < 3; i++) await Correct(h, null, rng);
        await h.Writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TestModels.X(rng)), 1));

        // Version 1 predicts like the base model (so its distribution and confidence do not move) and is promoted.
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 20).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 0, heldOut: true)));
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 0, heldOut: false)));
        round.Then(0);
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Equal(1, watch.Current!.Version);
        Assert.Null(watch.Current.Previous);

        // Noise does not trigger: 150 predictions, corrected at the predecessor's rate.
        await PredictAsync(h, 150, seed: 2);
        for (var i = 0; i < 3; i++) await Correct(h, 1, rng);
        Assert.Null(await watch.CheckAsync(default));
        Assert.Equal("watching", watch.Status.State);

        // Then users start correcting version 1: the watch wakes on each correction and rolls back once the rate is
        // both ≥ 2× the predecessor's and ≥ 5 points above it, with at least 10 corrections.
        // (The wake-up check the correction triggers usually decides; the explicit check waits for it, so the count is exact.)
        var surge = 0;
        var clock = Stopwatch.StartNew();
        TimeSpan reaction = default;
        while (!detected.Task.IsCompleted && surge < 40)
        {
            surge++;
            clock.Restart();
            await Correct(h, 1, rng);
            await watch.CheckAsync(default);
            reaction = clock.Elapsed;
        }
        Assert.True(detected.Task.IsCompleted, "no rollback after 40 corrections");
        var e = Assert.Single(detections);
        output.WriteLine($"rolled back after {e.Current.Predictions} predictions and {e.Current.Corrections} corrections of v1 ({surge} in the surge), " +
            $"{reaction.TotalMilliseconds:F0} ms after the deciding correction; {e.Reason}");
        Assert.True(e.RolledBack);
        Assert.Equal([DriftSignal.CorrectionRate], e.Signals);
        Assert.Equal((1, (int?)null), (e.Version, e.PreviousVersion));
        Assert.Equal(11, e.Current.Corrections); // the first count over both thresholds: 11/150 = 7.3% vs 2%
        Assert.Null(h.Handle.ServingVersion);
        Assert.Null(h.Versions.GetCurrent()); // a restart serves the base model too
        Assert.Equal(1, Interlocked.Read(ref counted));
        var health = await h.Host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        Assert.Equal("rolled back", health.Entries["onnxtune"].Data["drift_watch"]);
        Assert.Contains("CorrectionRate", (string)health.Entries["onnxtune"].Data["drift_detail"], StringComparison.Ordinal);
        Assert.Null(watch.Current);
    }

    [Fact]
    public async Task A_version_whose_predictions_move_away_from_the_golden_distribution_is_rolled_back_to_its_predecessor()
    {
        const int k = 3;
        var rng = new Random(8);
        var golden = GateKit.WriteJsonLines(_dir.Sub("golden.jsonl"), Enumerable.Range(0, 30).Select(i => (GateKit.Near(k, i % k, rng), i % k)));
        var always0 = GateKit.Mapping(k);
        always0.B[0] = 10;
        var always1 = GateKit.Mapping(k);
        always1.B[1] = 10;
        GateKit.WriteArtifacts(_dir.Sub("artifacts"), k, always0);
        // v1 classifies by the largest feature (predictions spread like the golden labels); v2 always says class 1.
        var round = new ModelRound(k).Then(GateKit.Mapping(k)).Then(always1);
        await using var h = await Harness.StartAsync(_dir, round, o =>
        {
            o.GoldenSetPath = golden;
            // This test is about the watch: let the gate pass anything so that a bad version gets promoted.
            (o.MinHeldOutImprovement, o.GoldenTolerance, o.Gate.PerClassTolerance, o.Gate.HeldOutMargin) = (0, 1, 1, 1);
            o.DriftWatch.CheckInterval = TimeSpan.FromHours(1);
            o.DriftWatch.RollBackOnDistributionShift = true;
        });
        var watch = h.Host.Services.GetRequiredKeyedService<DriftWatch>(h.Name);
        DriftDetectedEventArgs? detection = null;
        h.Events.DriftDetected += (_, e) => detection = e;
        void Predict(int n)
        {
            for (var i = 0; i < n; i++)
            {
                var x = new float[k];
                for (var j = 0; j < k; j++) x[j] = (float)rng.NextDouble();
                h.Handle.Predict(GateKit.Input(x));
            }
        }
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 30).Select(i => GateKit.Record(GateKit.Near(k, i % k, rng), i % k, heldOut: true)));
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(i => GateKit.Record(GateKit.Near(k, i % k, rng), i % k, heldOut: false)));
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        Predict(150);
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(i => GateKit.Record(GateKit.Near(k, i % k, rng), i % k, heldOut: false)));
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        Assert.Equal((2, (int?)1), (watch.Current!.Version, watch.Current.Previous));

        Predict(60); // fewer than MinPredictions (100): no verdict
        Assert.Null(await watch.CheckAsync(default));
        Assert.Equal("collecting", watch.Status.State);
        Predict(60);
        var e = await watch.CheckAsync(default);
        Assert.NotNull(e);
        Assert.Same(e, detection);
        output.WriteLine($"{e.Reason}");
        Assert.Contains(DriftSignal.DistributionShift, e.Signals);
        Assert.DoesNotContain(DriftSignal.Confidence, e.Signals); // v2 is more confident, not less
        Assert.True(e.RolledBack);
        Assert.InRange(e.Current.DistributionShift!.Value, 0.6, 0.7);  // all on one class vs a uniform reference
        Assert.InRange(e.Previous.DistributionShift!.Value, 0.0, 0.15);
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Equal(1, h.Versions.GetCurrent()!.Version);
        Assert.Equal("rolled back", watch.Status.State);
    }
}
