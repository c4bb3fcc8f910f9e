using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.Loops;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.Tests.TestUtilities;
using static OnnxTune.Training.Tests.TestUtilities.LinearRegressionArtifacts;

namespace OnnxTune.Training.Tests.Loops;

public sealed class TrainingLoopTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    private static readonly OptimizerSpec Adam = new() { Kind = OptimizerKind.AdamW, LearningRate = 0.05 };

    public void Dispose() => _dir.Dispose();

    private TrainingEngine Open(string name = "a")
    {
        var path = _dir.Combine(name);
        if (!Directory.Exists(path)) Create(path, Adam);
        return TrainingEngine.Open(path);
    }

    private static (float[] X, float[] T) Data(int samples)
    {
        var rng = new Random(7);
        var x = Enumerable.Range(0, samples * In).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var t = new float[samples * Out];
        for (var i = 0; i < samples; i++)
        {
            t[i * Out] = 2 * x[i * In] - x[i * In + 1] + 0.5f;
            t[i * Out + 1] = x[i * In + 2] - 0.25f;
        }
        return (x, t);
    }

    private static TrainingBatch Stack(float[] x, float[] t, int[] rows)
    {
        var xb = new float[rows.Length * In];
        var tb = new float[rows.Length * Out];
        for (var i = 0; i < rows.Length; i++)
        {
            x.AsSpan(rows[i] * In, In).CopyTo(xb.AsSpan(i * In));
            t.AsSpan(rows[i] * Out, Out).CopyTo(tb.AsSpan(i * Out));
        }
        return new TrainingBatch().Add("x", xb, rows.Length, In).WithLabels(tb, rows.Length, Out);
    }

    [Fact]
    public void Accumulation_and_run_relative_schedule_equal_the_hand_written_loop()
    {
        var (x, t) = Data(10);
        var schedule = LearningRateSchedules.LinearWithWarmup(0.05, 1, 6);
        using var looped = Open();
        var result = TrainingLoop.Run(looped, IndexedBatches.InOrder(10, 3, rows => Stack(x, t, rows)),
            new TrainingLoopOptions { Epochs = 2, GradientAccumulationSteps = 2, Schedule = schedule, RecordStepLosses = true });

        using var manual = Open();
        long updates = 0;
        var losses = new List<float>();
        for (var epoch = 0; epoch < 2; epoch++)
        {
            int[][] plan = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]];
            foreach (var rows in plan)
            {
                losses.Add(manual.TrainStep(Stack(x, t, rows)));
                if (manual.AccumulatedSteps == 2)
                {
                    manual.LearningRate = schedule.LearningRateAt(updates++);
                    manual.OptimizerStep();
                }
            }
            if (manual.AccumulatedSteps > 0)
            {
                manual.LearningRate = schedule.LearningRateAt(updates++);
                manual.OptimizerStep();
            }
        }
        Assert.Equal(losses, result.StepLosses);
        Assert.Equal(updates, result.Updates);
        Assert.Equal(4, updates); // 2 per epoch: after batches 2 and 4
        Assert.Equal(manual.GetParameter("W"), looped.GetParameter("W"));
        Assert.Equal(manual.GetParameter("b"), looped.GetParameter("b"));
        Assert.Equal([2, 2], result.Epochs.Select(e => e.Updates));
        Assert.Equal([10L, 10L], result.Epochs.Select(e => e.Examples));
        // Rows-weighted mean: the last batch has one row, so it differs from the plain batch mean.
        var first = result.StepLosses.Take(4).ToArray();
        Assert.Equal((first[0] * 3.0 + first[1] * 3 + first[2] * 3 + first[3]) / 10, result.Epochs[0].MeanLoss, 6);
        Assert.Equal(first.Average(v => (double)v), result.Epochs[0].MeanBatchLoss, 6);
    }

    [Fact]
    public void A_non_finite_loss_stops_before_its_update_and_names_the_step()
    {
        var (x, t) = Data(6);
        using var engine = Open();
        var w0 = engine.GetParameter("W");
        var batches = IndexedBatches.InOrder(6, 2, rows =>
        {
            var b = Stack(x, t, rows);
            if (rows[0] == 4) return Stack(Enumerable.Repeat(3e38f, x.Length).ToArray(), t, rows);
            return b;
        });
        var e = Assert.Throws<TrainingDivergedException>(() => TrainingLoop.Run(engine, batches));
        Assert.Equal(1, e.Epoch);
        Assert.Equal(3, e.Batch);
        Assert.False(float.IsFinite(e.Loss));
        Assert.Contains("epoch 1, batch 3", e.Message);
        Assert.Equal(2, engine.Step); // the two good batches were applied, the bad one was not
        Assert.NotEqual(w0, engine.GetParameter("W"));
    }

    [Fact]
    public void Cancellation_is_honoured_between_steps()
    {
        var (x, t) = Data(8);
        using var engine = Open();
        using var cts = new CancellationTokenSource();
        var progress = new Inline(p => { if (p.Batch == 2) cts.Cancel(); });
        Assert.Throws<OperationCanceledException>(() =>
            TrainingLoop.Run(engine, IndexedBatches.InOrder(8, 2, rows => Stack(x, t, rows)), new TrainingLoopOptions { Epochs = 3, Progress = progress }, cts.Token));
        Assert.Equal(2, engine.Step);
    }

    [Fact]
    public void Early_stopping_hook_ends_the_run_and_progress_estimates_the_rest()
    {
        var (x, t) = Data(8);
        using var engine = Open();
        var reports = new List<TrainingStepProgress>();
        var result = TrainingLoop.Run(engine, IndexedBatches.Shuffled(8, 4, seed: 3, rows => Stack(x, t, rows)), new TrainingLoopOptions
        {
            Epochs = 5,
            Progress = new Inline(reports.Add),
            StopAfterEpoch = e => e.Epoch == 2,
        });
        Assert.True(result.StoppedEarly);
        Assert.Equal(2, result.Epochs.Count);
        Assert.Equal(4, reports.Count);
        Assert.All(reports, r => Assert.Equal(5, r.Epochs));
        Assert.True(reports[^1].Remaining > TimeSpan.Zero); // 3 epochs were still planned when it stopped

        using var full = Open("b");
        var all = new List<TrainingStepProgress>();
        TrainingLoop.Run(full, IndexedBatches.InOrder(8, 4, rows => Stack(x, t, rows)), new TrainingLoopOptions { Epochs = 2, Progress = new Inline(all.Add) });
        Assert.Equal(TimeSpan.Zero, all[^1].Remaining);
    }

    [Fact]
    public void Grouped_batches_cover_every_example_once_and_never_mix_groups()
    {
        string[] groups = ["a", "b", "a", "c", "b", "a", "a", "c", "a"];
        var seen = new List<int[]>();
        var source = IndexedBatches.GroupedShuffled(groups, 2, seed: 5, rows => { seen.Add(rows); return new TrainingBatch(); });
        Assert.Equal(3 + 1 + 1, source.BatchesPerEpoch); // a: 5 → 3 batches, b: 2 → 1, c: 2 → 1
        var epoch1 = source.Epoch(1).Count();
        Assert.Equal(source.BatchesPerEpoch, epoch1);
        Assert.Equal(Enumerable.Range(0, groups.Length), seen.SelectMany(r => r).Order());
        Assert.All(seen, rows => Assert.Single(rows.Select(i => groups[i]).Distinct()));
        var first = seen.ToList();
        seen.Clear();
        _ = source.Epoch(2).Count();
        Assert.NotEqual(first.SelectMany(r => r), seen.SelectMany(r => r)); // a new order each epoch
    }

    [Fact]
    public void Bad_options_are_rejected_by_name()
    {
        using var engine = Open();
        var empty = TrainingBatches.Fixed([], 0);
        Assert.Contains("Epochs", Assert.Throws<ArgumentOutOfRangeException>(() => TrainingLoop.Run(engine, empty, new TrainingLoopOptions { Epochs = 0 })).Message);
        Assert.Contains("GradientAccumulationSteps", Assert.Throws<ArgumentOutOfRangeException>(() => TrainingLoop.Run(engine, empty, new TrainingLoopOptions { GradientAccumulationSteps = 0 })).Message);
        engine.Schedule = LearningRateSchedules.Constant(0.1);
        Assert.Throws<InvalidOperationException>(() => TrainingLoop.Run(engine, empty, new TrainingLoopOptions { Schedule = LearningRateSchedules.Constant(0.2) }));
    }

    private sealed class Inline(Action<TrainingStepProgress> report) : IProgress<TrainingStepProgress>
    {
        public void Report(TrainingStepProgress value) => report(value);
    }
}
