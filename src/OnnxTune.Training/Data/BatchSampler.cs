namespace OnnxTune.Training.Data;

/// <summary>
/// Splits sample indices into batches, epoch after epoch, like PyTorch's <c>DataLoader</c>: without shuffling the
/// batches take the samples in order; with shuffling every epoch draws a new permutation from one seeded generator.
/// The last partial batch is kept unless <c>dropLast</c> is set.
/// </summary>
public sealed class BatchSampler
{
    private readonly Random? _random;
    private readonly int[] _order;

    /// <summary>Creates a sampler.</summary>
    /// <param name="sampleCount">Number of samples (at least 1).</param>
    /// <param name="batchSize">Samples per batch (at least 1).</param>
    /// <param name="shuffle">Draw a new permutation every epoch.</param>
    /// <param name="seed">Seed of the permutations (ignored without <paramref name="shuffle"/>).</param>
    /// <param name="dropLast">Drop the last batch when it is smaller than <paramref name="batchSize"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is below 1.</exception>
    public BatchSampler(int sampleCount, int batchSize, bool shuffle = false, int seed = 0, bool dropLast = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sampleCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        SampleCount = sampleCount;
        BatchSize = batchSize;
        DropLast = dropLast;
        _random = shuffle ? new Random(seed) : null;
        _order = Enumerable.Range(0, sampleCount).ToArray();
    }

    /// <summary>Number of samples.</summary>
    public int SampleCount { get; }

    /// <summary>Samples per full batch.</summary>
    public int BatchSize { get; }

    /// <summary>Whether a last partial batch is dropped.</summary>
    public bool DropLast { get; }

    /// <summary>True when every epoch is a new permutation.</summary>
    public bool Shuffle => _random is not null;

    /// <summary>Batches per epoch.</summary>
    public int BatchesPerEpoch => DropLast ? SampleCount / BatchSize : (SampleCount + BatchSize - 1) / BatchSize;

    /// <summary>The batches of the next epoch (each an array of sample indices).</summary>
    public IReadOnlyList<int[]> NextEpoch()
    {
        if (_random is not null)
        {
            for (var i = 0; i < _order.Length; i++) _order[i] = i;
            _random.Shuffle(_order);
        }
        var batches = new List<int[]>(BatchesPerEpoch);
        for (var start = 0; start < SampleCount; start += BatchSize)
        {
            var size = Math.Min(BatchSize, SampleCount - start);
            if (size < BatchSize && DropLast) break;
            batches.Add(_order.AsSpan(start, size).ToArray());
        }
        return batches;
    }
}
