using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.Training;
using OnnxTune.Training.Checkpoints;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>
/// The real engine end to end: SQLite feedback, TrainingEngine rounds over generated artifacts of a tiny MLP,
/// the gate, promotion, hot swap and restart (no scripted round is registered, so the default engine runs).
/// </summary>
public sealed class EngineRoundTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly ITestOutputHelper _output;
    private readonly string _golden;
    private readonly List<(float[] X, int Y)> _test = Clusters.Sample(200, seed: 100);

    public EngineRoundTests(ITestOutputHelper output)
    {
        _output = output;
        Clusters.WriteArtifacts(_dir.Sub("artifacts"));
        _golden = Clusters.WriteGoldenSet(_dir.Sub("golden.jsonl"), Clusters.Sample(40, seed: 200));
    }

    public void Dispose() => _dir.Dispose();

    private Task<Harness> StartAsync(double replayRatio = 1.0, int epochs = 5, int batchSize = 16) => Harness.StartAsync(_dir, round: null, o =>
    {
        o.ReplayRatio = replayRatio;
        o.LearningRate = 0.01;
        o.EpochsPerRound = epochs;
        o.BatchSize = batchSize;
        o.MinHeldOutImprovement = 0;
        o.GoldenSetPath = _golden;
    });

    /// <summary>Writes cluster samples; poisoned ones get every label moved to the next class.</summary>
    private static async Task WriteAsync(Harness h, IEnumerable<(float[] X, int Y)> rows, bool poison = false)
    {
        foreach (var (x, y) in rows)
            await h.Writer.WriteAsync(Feedback.ForTensors(Clusters.Tensors(x), poison ? (y + 1) % Clusters.Classes : y));
    }

    /// <summary>The service deletes the round folder right after raising RoundCompleted; give it a moment.</summary>
    private static async Task AssertRoundsCleanedAsync(Harness h)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (Directory.Exists(h.Service.RoundsRoot) && Directory.EnumerateFileSystemEntries(h.Service.RoundsRoot).Any() && DateTime.UtcNow < deadline)
            await Task.Delay(10);
        Assert.Empty(Directory.Exists(h.Service.RoundsRoot) ? Directory.EnumerateFileSystemEntries(h.Service.RoundsRoot) : []);
    }

    private static long MetricSteps(ModelVersionInfo v)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(v.MetricsPath));
        return doc.RootElement.GetProperty("steps").GetInt64();
    }

    [Fact]
    public async Task Default_registration_uses_the_training_engine()
    {
        await using var h = await StartAsync();
        Assert.IsType<TrainingEngineFineTuningRound>(h.Host.Services.GetRequiredKeyedService<IFineTuningRound>(h.Name));
    }

    [Fact]
    public async Task Round_on_correct_feedback_is_promoted_and_improves_accuracy()
    {
        await using var h = await StartAsync();
        var before = Clusters.Accuracy(h.Handle, _test);
        await WriteAsync(h, Clusters.Sample(160, seed: 1));

        var e = await h.NextRoundAsync();

        Assert.True(e.Outcome == RoundOutcome.Promoted, $"round outcome {e.Outcome}: {e.Error?.Message}{string.Join("; ", e.Decision?.Reasons ?? [])}");
        Assert.Equal(1, h.Handle.ServingVersion);
        var after = Clusters.Accuracy(h.Handle, _test);
        var d = e.Decision!;
        var version = h.Versions.GetCurrent()!;
        var steps = MetricSteps(version);
        _output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"accuracy on 200 unseen points {before:F3} -> {after:F3}; train loss {d.TrainLoss:F4}, {steps} steps; held-out {d.Serving.HeldOutMetric:F3} -> {d.Candidate.HeldOutMetric:F3} (n={d.Candidate.HeldOutCount}); golden {d.Serving.GoldenMetric:F3} -> {d.Candidate.GoldenMetric:F3}; round {e.Duration.TotalMilliseconds:F0} ms"));
        Assert.True(after >= 0.95, $"accuracy after the round is {after:F3}");
        Assert.True(after - before >= 0.3, $"accuracy went from {before:F3} to {after:F3}");
        Assert.InRange(d.TrainLoss, 0, 0.5 * Math.Log(Clusters.Classes));
        // The version's checkpoint is the real one the round trained: its step count equals the round's steps.
        var (meta, _) = CheckpointStore.Load(version.CheckpointPath);
        Assert.True(steps > 0);
        Assert.Equal(steps, meta.Step);
        await AssertRoundsCleanedAsync(h);
    }

    [Fact]
    public async Task Round_on_poisoned_labels_is_rejected_and_serving_stays()
    {
        // Poison outweighs the replayed clean records (4:1), so the candidate learns the shifted labels.
        await using var h = await StartAsync(replayRatio: 0.25);
        await WriteAsync(h, Clusters.Sample(160, seed: 1));
        var first = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Promoted, first.Outcome);
        var servingAccuracy = Clusters.Accuracy(h.Handle, _test);
        var probe = _test.Take(20).Select(r => h.Handle.Predict(Clusters.Tensors(r.X)).Outputs[Clusters.Output].FloatData!).ToList();

        await WriteAsync(h, Clusters.Sample(160, seed: 2), poison: true);
        var e = await h.NextRoundAsync();

        var d = e.Decision!;
        _output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"poisoned round: {e.Outcome}; train loss {d.TrainLoss:F4}; golden {d.Serving.GoldenMetric:F3} -> {d.Candidate.GoldenMetric:F3}; held-out {d.Serving.HeldOutMetric:F3} -> {d.Candidate.HeldOutMetric:F3} (n={d.Candidate.HeldOutCount}); reasons: {string.Join("; ", d.Reasons)}"));
        Assert.Equal(RoundOutcome.Rejected, e.Outcome);
        Assert.Contains(d.Checks, c => c.Gate == "golden-set" && !c.Passed);
        Assert.True(d.Candidate.GoldenMetric < d.Serving.GoldenMetric - 0.2, "the poisoned candidate should be clearly worse on the golden set");
        Assert.Equal(1, h.Handle.ServingVersion);
        Assert.Single(h.Versions.ListVersions());
        Assert.Equal(servingAccuracy, Clusters.Accuracy(h.Handle, _test));
        for (var i = 0; i < probe.Count; i++)
            Assert.Equal(probe[i], h.Handle.Predict(Clusters.Tensors(_test[i].X)).Outputs[Clusters.Output].FloatData!);
        await AssertRoundsCleanedAsync(h);
    }

    [Fact]
    public async Task Stopping_the_host_mid_round_cancels_training_and_keeps_nothing()
    {
        // 1000 epochs of single-example steps (~140k steps): seconds of work even on a fast machine, so the stop
        // below lands mid-round (with batch 16 the whole round once finished in ~150 ms, before the stop).
        var h = await StartAsync(epochs: 1000, batchSize: 1);
        try
        {
            await WriteAsync(h, Clusters.Sample(160, seed: 1));
            var work = Path.Combine(h.Service.RoundsRoot, "000001");
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (!Directory.Exists(work))
            {
                Assert.True(DateTime.UtcNow < deadline, "round 1 did not start within 10 s");
                h.Time.Advance(TimeSpan.FromSeconds(1));
                await Task.Delay(20);
            }
            await Task.Delay(100); // inside the epochs now
            var stop = System.Diagnostics.Stopwatch.StartNew();
            await h.Host.StopAsync();
            _output.WriteLine($"host stopped {stop.ElapsedMilliseconds} ms after the stop request, mid-round");
            Assert.True(stop.Elapsed < TimeSpan.FromSeconds(5), $"stop took {stop.Elapsed}");
            Assert.False(Directory.Exists(work), "the cancelled round's folder was left behind");
            Assert.Empty(h.Versions.ListVersions());
            Assert.Null(h.Versions.GetCurrent());
            Assert.Null(await h.Store.GetStateAsync(FineTuningBackgroundService.WatermarkKey));
            Assert.Equal(160, await h.Store.CountTrainingSinceAsync(0) + (await h.Store.GetHeldOutAsync(160)).Count);
        }
        finally
        {
            await h.DisposeAsync();
        }
    }

    [Fact]
    public async Task Restart_after_promotion_serves_the_promoted_version_with_feedback_intact()
    {
        long latest, heldOut, training;
        string? watermark;
        List<float[]> probe;
        await using (var h = await StartAsync())
        {
            await WriteAsync(h, Clusters.Sample(160, seed: 1));
            Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
            probe = _test.Take(20).Select(r => h.Handle.Predict(Clusters.Tensors(r.X)).Outputs[Clusters.Output].FloatData!).ToList();
            latest = await h.Store.GetLatestSequenceAsync();
            heldOut = (await h.Store.GetHeldOutAsync(latest)).Count;
            training = (await h.Store.GetTrainingSinceAsync(0, latest)).Count;
            watermark = await h.Store.GetStateAsync(FineTuningBackgroundService.WatermarkKey);
        }

        await using var again = await StartAsync();
        Assert.Equal(1, again.Handle.ServingVersion);
        for (var i = 0; i < probe.Count; i++)
            Assert.Equal(probe[i], again.Handle.Predict(Clusters.Tensors(_test[i].X)).Outputs[Clusters.Output].FloatData!);
        Assert.Equal(160, latest);
        Assert.Equal(160, heldOut + training);
        Assert.Equal(latest, await again.Store.GetLatestSequenceAsync());
        Assert.Equal(heldOut, (await again.Store.GetHeldOutAsync(latest)).Count);
        Assert.Equal(training, (await again.Store.GetTrainingSinceAsync(0, latest)).Count);
        Assert.Equal(watermark, await again.Store.GetStateAsync(FineTuningBackgroundService.WatermarkKey));
        Assert.Equal(0, await again.Store.CountTrainingSinceAsync(long.Parse(watermark!, CultureInfo.InvariantCulture)));
        _output.WriteLine($"after restart: version {again.Handle.ServingVersion}, {training} training + {heldOut} held-out records, watermark {watermark}");
    }
}
