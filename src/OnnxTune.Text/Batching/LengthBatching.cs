namespace OnnxTune.Text.Batching;

/// <summary>Groups examples of similar length into batches so little of each batch is padding.</summary>
public static class LengthBatching
{
    /// <summary>
    /// Sorts example indices by length (a stable bucket sort), cuts the sorted list into consecutive batches of
    /// <paramref name="batchSize"/>, and with a <paramref name="seed"/> first shuffles the examples (so equal
    /// lengths mix) and then the batch order. Every index in <c>[0, lengths.Count)</c> lands in exactly one batch.
    /// </summary>
    /// <param name="lengths">Length (token count) of each example.</param>
    /// <param name="batchSize">Maximum rows per batch.</param>
    /// <param name="seed">Seed of <see cref="Random"/>; <see langword="null"/> gives shortest-first order with ties by index.</param>
    public static IReadOnlyList<int[]> CreateBatches(IReadOnlyList<int> lengths, int batchSize, int? seed = null)
    {
        ArgumentNullException.ThrowIfNull(lengths);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var n = lengths.Count;
        var order = new int[n];
        for (var i = 0; i < n; i++)
            order[i] = i;
        var random = seed is null ? null : new Random(seed.Value);
        random?.Shuffle(order);

        var maxLength = 0;
        for (var i = 0; i < n; i++)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(lengths[i], $"lengths[{i}]");
            maxLength = Math.Max(maxLength, lengths[i]);
        }
        // Counting sort keeps the (shuffled) order among equal lengths.
        var starts = new int[maxLength + 2];
        foreach (var i in order)
            starts[lengths[i] + 1]++;
        for (var l = 1; l < starts.Length; l++)
            starts[l] += starts[l - 1];
        var sorted = new int[n];
        foreach (var i in order)
            sorted[starts[lengths[i]]++] = i;

        var batches = new int[(n + batchSize - 1) / batchSize][];
        for (var b = 0; b < batches.Length; b++)
            batches[b] = sorted.AsSpan(b * batchSize, Math.Min(batchSize, n - (b * batchSize))).ToArray();
        random?.Shuffle(batches);
        return batches;
    }
}
