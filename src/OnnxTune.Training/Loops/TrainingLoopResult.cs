namespace OnnxTune.Training.Loops;

/// <summary>One train step's report to <see cref="TrainingLoopOptions.Progress"/>.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="Epochs">Epochs of the run.</param>
/// <param name="Batch">1-based batch within the epoch.</param>
/// <param name="BatchesPerEpoch">Batches per epoch.</param>
/// <param name="Loss">The step's loss.</param>
/// <param name="Elapsed">Time since the run started.</param>
/// <param name="Remaining">Estimate of the rest of the run from the mean step time so far.</param>
public sealed record TrainingStepProgress(int Epoch, int Epochs, int Batch, int BatchesPerEpoch, float Loss, TimeSpan Elapsed, TimeSpan Remaining);

/// <summary>What one epoch of a <see cref="TrainingLoop"/> did.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="MeanLoss">Mean of the batch losses weighted by batch rows (unweighted when rows are unknown).</param>
/// <param name="MeanBatchLoss">Plain mean of the batch losses.</param>
/// <param name="Steps">Train steps (batches).</param>
/// <param name="Updates">Optimizer updates.</param>
/// <param name="Examples">Rows trained on.</param>
/// <param name="Elapsed">Wall time of the epoch.</param>
public sealed record TrainingEpochSummary(int Epoch, double MeanLoss, double MeanBatchLoss, int Steps, int Updates, long Examples, TimeSpan Elapsed);

/// <summary>What a <see cref="TrainingLoop.Run"/> did.</summary>
/// <param name="Epochs">One summary per epoch run.</param>
/// <param name="StepLosses">Every step's loss when <see cref="TrainingLoopOptions.RecordStepLosses"/> is set, else empty.</param>
/// <param name="Updates">Optimizer updates of the run.</param>
/// <param name="StoppedEarly">The early-stopping hook ended the run before its last epoch.</param>
/// <param name="Elapsed">Wall time of the run.</param>
public sealed record TrainingLoopResult(IReadOnlyList<TrainingEpochSummary> Epochs, IReadOnlyList<float> StepLosses, long Updates, bool StoppedEarly, TimeSpan Elapsed)
{
    /// <summary>Train steps of the run.</summary>
    public long Steps => Epochs.Sum(e => (long)e.Steps);

    /// <summary>Mean loss of the last epoch run (NaN when none ran).</summary>
    public double LastEpochLoss => Epochs.Count == 0 ? double.NaN : Epochs[^1].MeanLoss;
}
