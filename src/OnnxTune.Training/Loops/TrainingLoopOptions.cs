using OnnxTune.Training.Schedules;

namespace OnnxTune.Training.Loops;

/// <summary>Settings of one <see cref="TrainingLoop.Run"/>.</summary>
public sealed record TrainingLoopOptions
{
    /// <summary>Passes over the batches (at least 1).</summary>
    public int Epochs { get; init; } = 1;

    /// <summary>Train steps per optimizer update; an epoch's last update may cover fewer (at least 1).</summary>
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>
    /// Learning rate per update, evaluated at the number of updates this run has made so far (so a warm-up starts at
    /// every run). Null leaves the engine's own learning rate or attached schedule alone.
    /// </summary>
    public ILearningRateSchedule? Schedule { get; init; }

    /// <summary>Receives one report per train step (loss, position, elapsed time and an estimate of the rest).</summary>
    public IProgress<TrainingStepProgress>? Progress { get; init; }

    /// <summary>Called after every epoch; returning true ends the run early (for example when an eval loss stops improving).</summary>
    public Func<TrainingEpochSummary, bool>? StopAfterEpoch { get; init; }

    /// <summary>Keep every step's loss in <see cref="TrainingLoopResult.StepLosses"/> (off: only epoch means).</summary>
    public bool RecordStepLosses { get; init; }
}
