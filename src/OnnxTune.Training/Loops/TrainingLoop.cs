using System.Diagnostics;
using System.Globalization;

namespace OnnxTune.Training.Loops;

/// <summary>
/// The one epoch loop of OnnxTune: the CLI's <c>train</c>, hosting rounds and the frozen-prefix cached path all run
/// it. Per epoch it takes the source's batches, runs a train step on each, applies an optimizer update every
/// <see cref="TrainingLoopOptions.GradientAccumulationSteps"/> steps and at the epoch's end (with the learning rate
/// of <see cref="TrainingLoopOptions.Schedule"/>), reports progress, and honours cancellation between steps. A
/// non-finite loss stops the run with <see cref="TrainingDivergedException"/> before its update is applied.
/// </summary>
public static class TrainingLoop
{
    /// <summary>Trains <paramref name="engine"/> on <paramref name="batches"/>.</summary>
    /// <exception cref="TrainingDivergedException">A step's loss was NaN or infinite.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (between steps).</exception>
    public static TrainingLoopResult Run(TrainingEngine engine, ITrainingBatches batches, TrainingLoopOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(batches);
        options ??= new TrainingLoopOptions();
        if (options.Epochs < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.Epochs, "TrainingLoopOptions.Epochs must be at least 1.");
        if (options.GradientAccumulationSteps < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.GradientAccumulationSteps, "TrainingLoopOptions.GradientAccumulationSteps must be at least 1.");
        if (options.Schedule is not null && engine.Schedule is not null)
            throw new InvalidOperationException("The engine has a learning-rate schedule attached; set TrainingEngine.Schedule to null or leave TrainingLoopOptions.Schedule unset.");

        var run = Stopwatch.StartNew();
        var summaries = new List<TrainingEpochSummary>(options.Epochs);
        var stepLosses = options.RecordStepLosses ? new List<float>() : null;
        var totalSteps = (long)options.Epochs * batches.BatchesPerEpoch;
        long updates = 0, stepsDone = 0;
        var stoppedEarly = false;
        for (var epoch = 1; epoch <= options.Epochs; epoch++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var epochStart = run.Elapsed;
            double lossSum = 0, weightedSum = 0;
            long rows = 0;
            int steps = 0, epochUpdates = 0;
            foreach (var batch in batches.Epoch(epoch))
            {
                cancellationToken.ThrowIfCancellationRequested();
                var loss = engine.TrainStep(batch);
                steps++;
                stepsDone++;
                if (!float.IsFinite(loss))
                    throw new TrainingDivergedException(string.Create(CultureInfo.InvariantCulture,
                        $"The loss is {loss} at epoch {epoch}, batch {steps} (optimizer step {engine.Step + 1}, learning rate {CurrentRate(engine, options, updates):G6}); the update was not applied. Lower the learning rate or check the data and labels."),
                        epoch, steps, loss);
                var n = RowsOf(batch);
                lossSum += loss;
                weightedSum += (double)loss * n;
                rows += n;
                stepLosses?.Add(loss);
                if (engine.AccumulatedSteps >= options.GradientAccumulationSteps)
                {
                    Update(engine, options, updates++);
                    epochUpdates++;
                }
                if (options.Progress is { } progress)
                {
                    var elapsed = run.Elapsed;
                    var remaining = TimeSpan.FromTicks((long)(elapsed.Ticks / (double)stepsDone * Math.Max(0, totalSteps - stepsDone)));
                    progress.Report(new TrainingStepProgress(epoch, options.Epochs, steps, batches.BatchesPerEpoch, loss, elapsed, remaining));
                }
            }
            if (engine.AccumulatedSteps > 0)
            {
                Update(engine, options, updates++);
                epochUpdates++;
            }
            var summary = new TrainingEpochSummary(epoch,
                rows > 0 ? weightedSum / rows : (steps > 0 ? lossSum / steps : double.NaN),
                steps > 0 ? lossSum / steps : double.NaN, steps, epochUpdates, rows, run.Elapsed - epochStart);
            summaries.Add(summary);
            if (options.StopAfterEpoch?.Invoke(summary) == true && epoch < options.Epochs)
            {
                stoppedEarly = true;
                break;
            }
        }
        return new TrainingLoopResult(summaries, (IReadOnlyList<float>?)stepLosses ?? [], updates, stoppedEarly, run.Elapsed);
    }

    private static void Update(TrainingEngine engine, TrainingLoopOptions options, long completedUpdates)
    {
        if (options.Schedule is { } schedule) engine.LearningRate = schedule.LearningRateAt(completedUpdates);
        engine.OptimizerStep();
    }

    private static double CurrentRate(TrainingEngine engine, TrainingLoopOptions options, long completedUpdates) =>
        options.Schedule?.LearningRateAt(completedUpdates) ?? engine.LearningRate;

    private static long RowsOf(TrainingBatch batch)
    {
        if (batch.Labels is { Shape: [> 0 and var n, ..] }) return n;
        foreach (var input in batch.Inputs.Values)
            if (input.Shape is [> 0 and var m, ..]) return m;
        return 0;
    }
}
