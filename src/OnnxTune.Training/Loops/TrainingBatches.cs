namespace OnnxTune.Training.Loops;

/// <summary>Ready-made <see cref="ITrainingBatches"/> sources.</summary>
public static class TrainingBatches
{
    /// <summary>A source whose epochs come from a function (for example text batches bucketed by length).</summary>
    /// <param name="examples">Examples per epoch.</param>
    /// <param name="batchesPerEpoch">Batches per epoch.</param>
    /// <param name="epoch">The batches of a 1-based epoch.</param>
    public static ITrainingBatches FromEpochs(int examples, int batchesPerEpoch, Func<int, IEnumerable<TrainingBatch>> epoch)
    {
        ArgumentNullException.ThrowIfNull(epoch);
        ArgumentOutOfRangeException.ThrowIfNegative(examples);
        ArgumentOutOfRangeException.ThrowIfNegative(batchesPerEpoch);
        return new FunctionBatches(examples, batchesPerEpoch, epoch);
    }

    /// <summary>The same batches every epoch, in the given order.</summary>
    public static ITrainingBatches Fixed(IReadOnlyList<TrainingBatch> batches, int examples)
    {
        ArgumentNullException.ThrowIfNull(batches);
        return new FunctionBatches(examples, batches.Count, _ => batches);
    }

    private sealed class FunctionBatches(int examples, int batchesPerEpoch, Func<int, IEnumerable<TrainingBatch>> epoch) : ITrainingBatches
    {
        public int BatchesPerEpoch => batchesPerEpoch;

        public int ExamplesPerEpoch => examples;

        public IEnumerable<TrainingBatch> Epoch(int e) => epoch(e);
    }
}
