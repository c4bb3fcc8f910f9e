namespace OnnxTune.Training.Loops;

/// <summary>
/// The batches a <see cref="TrainingLoop"/> trains on, epoch by epoch. The source decides the order (in file order,
/// shuffled, length-bucketed, grouped by shape); the loop only consumes it.
/// </summary>
public interface ITrainingBatches
{
    /// <summary>Batches in one epoch (used for schedules, progress and the time estimate).</summary>
    int BatchesPerEpoch { get; }

    /// <summary>Examples in one epoch.</summary>
    int ExamplesPerEpoch { get; }

    /// <summary>
    /// The batches of <paramref name="epoch"/> (1-based). Each batch is handed to
    /// <see cref="TrainingEngine.TrainStep"/> before the next one is requested, so a source may reuse its buffers.
    /// </summary>
    IEnumerable<TrainingBatch> Epoch(int epoch);
}
