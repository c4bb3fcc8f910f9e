using Microsoft.Data.Sqlite;

namespace OnnxTune.Hosting;

public sealed partial class SqliteFeedbackStore
{
    /// <inheritdoc/>
    /// <exception cref="FeedbackStoreException">The store failed.</exception>
    public ValueTask<IReadOnlyList<PartitionSummary>> GetPartitionsAsync(long upToSequence, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(Guard<IReadOnlyList<PartitionSummary>>("read", write: false, () =>
        {
            using var c = Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = """
                SELECT partition_key, SUM(held_out = 0), SUM(held_out = 1), MAX(seq) FROM feedback
                WHERE partition_key IS NOT NULL AND seq <= $b GROUP BY partition_key ORDER BY partition_key;
                """;
            cmd.Parameters.AddWithValue("$b", upToSequence);
            using var r = cmd.ExecuteReader();
            var list = new List<PartitionSummary>();
            while (r.Read()) list.Add(new PartitionSummary(r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3)));
            return list;
        }));
    }

    /// <inheritdoc/>
    /// <exception cref="FeedbackStoreException">The store failed.</exception>
    public ValueTask<IReadOnlyList<FeedbackRecord>> GetPartitionAsync(string partitionKey, long upToSequence, int maxRecords, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(partitionKey);
        ArgumentOutOfRangeException.ThrowIfNegative(maxRecords);
        return ValueTask.FromResult(Query(
            $"SELECT * FROM (SELECT {Columns} FROM feedback WHERE partition_key = $k AND seq <= $b ORDER BY seq DESC LIMIT $n) ORDER BY seq;",
            cancellationToken, ("$k", partitionKey), ("$b", upToSequence), ("$n", maxRecords)));
    }
}
