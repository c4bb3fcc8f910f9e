using Npgsql;

namespace OnnxTune.Hosting.PostgreSql;

public sealed partial class PostgreSqlFeedbackStore : IPartitionedFeedbackStore
{
    /// <inheritdoc/>
    /// <exception cref="FeedbackStoreException">The store failed.</exception>
    public ValueTask<IReadOnlyList<PartitionSummary>> GetPartitionsAsync(long upToSequence, CancellationToken cancellationToken = default) =>
        Guard<IReadOnlyList<PartitionSummary>>("read", async ct =>
        {
            await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
            await using var cmd = Command(c, null, """
                SELECT partition_key, COUNT(*) FILTER (WHERE NOT held_out), COUNT(*) FILTER (WHERE held_out), MAX(seq) FROM feedback
                WHERE partition_key IS NOT NULL AND seq <= @b GROUP BY partition_key ORDER BY partition_key COLLATE "C";
                """, [("b", (object)upToSequence)]);
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            var list = new List<PartitionSummary>();
            while (await r.ReadAsync(ct).ConfigureAwait(false))
                list.Add(new PartitionSummary(r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3)));
            return list;
        }, cancellationToken);

    /// <inheritdoc/>
    /// <exception cref="FeedbackStoreException">The store failed.</exception>
    public ValueTask<IReadOnlyList<FeedbackRecord>> GetPartitionAsync(string partitionKey, long upToSequence, int maxRecords, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(partitionKey);
        ArgumentOutOfRangeException.ThrowIfNegative(maxRecords);
        return QueryAsync(
            $"SELECT * FROM (SELECT {Columns} FROM feedback WHERE partition_key = @k AND seq <= @b ORDER BY seq DESC LIMIT @n) newest ORDER BY seq;",
            cancellationToken, ("k", partitionKey), ("b", upToSequence), ("n", maxRecords));
    }
}
