namespace OnnxTune.Hosting;

/// <summary>What a store holds for one partition key.</summary>
/// <param name="PartitionKey">The key.</param>
/// <param name="TrainingRecords">Training (not held-out) records of the key.</param>
/// <param name="HeldOutRecords">Held-out records of the key.</param>
/// <param name="LatestSequence">The highest sequence number among the key's records.</param>
public sealed record PartitionSummary(string PartitionKey, long TrainingRecords, long HeldOutRecords, long LatestSequence);

/// <summary>
/// Reads feedback by partition key (tenant or user), for personalization: each key's records train its own adapter.
/// <see cref="SqliteFeedbackStore"/> and <c>PostgreSqlFeedbackStore</c> implement it; personalization needs it.
/// </summary>
public interface IPartitionedFeedbackStore
{
    /// <summary>One summary per partition key that has records with sequence ≤ <paramref name="upToSequence"/>, ordered by key.</summary>
    ValueTask<IReadOnlyList<PartitionSummary>> GetPartitionsAsync(long upToSequence, CancellationToken cancellationToken = default);

    /// <summary>
    /// The key's records (training and held-out) with sequence ≤ <paramref name="upToSequence"/>, the newest
    /// <paramref name="maxRecords"/> of them, in sequence order.
    /// </summary>
    ValueTask<IReadOnlyList<FeedbackRecord>> GetPartitionAsync(string partitionKey, long upToSequence, int maxRecords, CancellationToken cancellationToken = default);
}
