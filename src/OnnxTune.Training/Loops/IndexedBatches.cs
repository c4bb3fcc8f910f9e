using OnnxTune.Training.Data;

namespace OnnxTune.Training.Loops;

/// <summary>
/// An <see cref="ITrainingBatches"/> over indexed examples: a plan gives each epoch's batches as arrays of example
/// indices and a factory stacks one batch. Plans: <see cref="InOrder"/>, <see cref="Shuffled"/>,
/// <see cref="GroupedShuffled"/>, or any caller-made plan (for example length bucketing of text).
/// </summary>
public sealed class IndexedBatches : ITrainingBatches
{
    private readonly Func<int, IReadOnlyList<int[]>> _plan;
    private readonly Func<int[], TrainingBatch> _createBatch;

    /// <summary>Creates a source from an epoch plan and a batch factory.</summary>
    /// <param name="examples">Examples per epoch.</param>
    /// <param name="batchesPerEpoch">Batches every epoch's plan holds.</param>
    /// <param name="plan">The batches (example indices) of a 1-based epoch.</param>
    /// <param name="createBatch">Stacks the examples of one batch.</param>
    public IndexedBatches(int examples, int batchesPerEpoch, Func<int, IReadOnlyList<int[]>> plan, Func<int[], TrainingBatch> createBatch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(examples);
        ArgumentOutOfRangeException.ThrowIfNegative(batchesPerEpoch);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(createBatch);
        ExamplesPerEpoch = examples;
        BatchesPerEpoch = batchesPerEpoch;
        _plan = plan;
        _createBatch = createBatch;
    }

    /// <inheritdoc />
    public int BatchesPerEpoch { get; }

    /// <inheritdoc />
    public int ExamplesPerEpoch { get; }

    /// <inheritdoc />
    public IEnumerable<TrainingBatch> Epoch(int epoch)
    {
        foreach (var indices in _plan(epoch))
            yield return _createBatch(indices);
    }

    /// <summary>Batches in index order every epoch, the last one partial (DataLoader <c>shuffle=False</c>).</summary>
    public static IndexedBatches InOrder(int examples, int batchSize, Func<int[], TrainingBatch> createBatch) =>
        FromSampler(new BatchSampler(examples, batchSize, shuffle: false), createBatch);

    /// <summary>A new seeded permutation every epoch (DataLoader <c>shuffle=True</c>).</summary>
    public static IndexedBatches Shuffled(int examples, int batchSize, int seed, Func<int[], TrainingBatch> createBatch) =>
        FromSampler(new BatchSampler(examples, batchSize, shuffle: true, seed), createBatch);

    /// <summary>
    /// Examples that may not share a batch (different shapes) are kept apart: every epoch shuffles the examples,
    /// groups them by <paramref name="groupOf"/> (keeping the shuffled order), cuts each group into batches and
    /// shuffles the batch order, all from one seeded generator.
    /// </summary>
    public static IndexedBatches GroupedShuffled(IReadOnlyList<string> groupOf, int batchSize, int seed, Func<int[], TrainingBatch> createBatch)
    {
        ArgumentNullException.ThrowIfNull(groupOf);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var random = new Random(seed);
        var order = Enumerable.Range(0, groupOf.Count).ToArray();
        var batches = groupOf.GroupBy(g => g, StringComparer.Ordinal).Sum(g => (g.Count() + batchSize - 1) / batchSize);
        return new IndexedBatches(groupOf.Count, batches, _ =>
        {
            random.Shuffle(order);
            var plan = order.GroupBy(i => groupOf[i], StringComparer.Ordinal).SelectMany(g => g.Chunk(batchSize)).ToArray();
            random.Shuffle(plan);
            return plan;
        }, createBatch);
    }

    private static IndexedBatches FromSampler(BatchSampler sampler, Func<int[], TrainingBatch> createBatch) =>
        new(sampler.SampleCount, sampler.BatchesPerEpoch, _ => sampler.NextEpoch(), createBatch);
}
