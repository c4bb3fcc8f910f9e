using System.Security.Cryptography;
using Npgsql;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.PostgreSql.Internal;

namespace OnnxTune.Hosting.PostgreSql;

/// <summary>
/// An <see cref="IFeedbackStore"/> in PostgreSQL, shared by every instance of an app: the same semantics as
/// <see cref="SqliteFeedbackStore"/> (durable once <see cref="AppendAsync"/> returns — a committed transaction
/// with the server's <c>synchronous_commit</c> —, quarantine, the round ledger, the watermark, deletion by user,
/// retention bounded by the watermark). Sequence numbers come from a counter row updated in the inserting
/// transaction, so they are handed out in commit order: a round that reads the latest sequence never skips a
/// record committed later with a lower number. Every failure is a <see cref="FeedbackStoreException"/>.
/// </summary>
public sealed partial class PostgreSqlFeedbackStore : IFeedbackStore, IFeedbackMaintenance, IDisposable
{
    private const string Columns = "seq, id, created_at, user_id, text, tensors, label_index, label_name, weight, metadata, held_out, partition_key";
    private const string SecretKey = "user_hash_secret";
    private readonly PostgreSqlDatabase _db;
    private readonly bool _ownsDatabase;
    private readonly TimeProvider _time;
    private readonly Func<NpgsqlConnection, NpgsqlTransaction, CancellationToken, Task>? _fence;
    private readonly byte[] _secret;

    /// <summary>Opens (creating the schema and tables if needed) the store in <paramref name="schema"/>.</summary>
    /// <exception cref="FeedbackStoreException">The server cannot be reached or the schema cannot be created.</exception>
    public PostgreSqlFeedbackStore(string connectionString, string schema = "onnxtune", TimeProvider? timeProvider = null)
        : this(new PostgreSqlDatabase(connectionString, schema), ownsDatabase: true, timeProvider, fence: null)
    {
    }

    internal PostgreSqlFeedbackStore(PostgreSqlDatabase db, bool ownsDatabase, TimeProvider? timeProvider,
        Func<NpgsqlConnection, NpgsqlTransaction, CancellationToken, Task>? fence)
    {
        _db = db;
        _ownsDatabase = ownsDatabase;
        _time = timeProvider ?? TimeProvider.System;
        _fence = fence;
        try
        {
            db.EnsureCreated();
            using var c = db.DataSource.OpenConnection();
            using var cmd = new NpgsqlCommand("INSERT INTO state (key, value) VALUES (@k, @v) ON CONFLICT (key) DO NOTHING; SELECT value FROM state WHERE key = @k;", c);
            cmd.Parameters.AddWithValue("k", SecretKey);
            cmd.Parameters.AddWithValue("v", Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)));
            _secret = Convert.FromHexString((string)cmd.ExecuteScalar()!);
        }
        catch (Exception e) when (PostgreSqlDatabase.IsStoreError(e) || e is FormatException)
        {
            if (ownsDatabase) db.Dispose();
            throw e is FormatException
                ? new FeedbackStoreException(FeedbackStoreErrorKind.Corrupt, db.Description, "open", $"Feedback store '{db.Description}': the user hash secret is damaged: {e.Message}", e)
                : db.Wrap(e, "open");
        }
    }

    /// <summary>Gets the server, database and schema (no credentials).</summary>
    public string Description => _db.Description;

    /// <inheritdoc/>
    public ValueTask<long> AppendAsync(FeedbackRecord record, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        return Guard("append", async ct =>
        {
            await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
            // One statement, one transaction: the counter row stays locked until the insert commits.
            await using var cmd = new NpgsqlCommand("""
                WITH s AS (UPDATE feedback_sequence SET last = last + 1 WHERE id = 1 RETURNING last)
                INSERT INTO feedback (seq, id, created_at, user_id, text, tensors, label_index, label_name, weight, metadata, held_out, partition_key)
                SELECT s.last, @id, @created, @user, @text, @tensors, @li, @ln, @w, @meta, @ho, @pk FROM s RETURNING seq;
                """, c);
            cmd.Parameters.AddWithValue("id", record.Id);
            cmd.Parameters.AddWithValue("created", record.CreatedAt.ToUnixTimeMilliseconds());
            cmd.Parameters.Add(Text("user", record.UserId));
            cmd.Parameters.Add(Text("text", record.Text));
            cmd.Parameters.Add(Text("tensors", record.Tensors is { } t ? FeedbackJson.WriteTensors(t) : null));
            cmd.Parameters.AddWithValue("li", record.LabelIndex);
            cmd.Parameters.Add(Text("ln", record.LabelName));
            cmd.Parameters.AddWithValue("w", (double)record.Weight);
            cmd.Parameters.Add(Text("meta", record.Metadata is { Count: > 0 } m ? FeedbackJson.WriteMetadata(m) : null));
            cmd.Parameters.AddWithValue("ho", record.HeldOut);
            cmd.Parameters.Add(Text("pk", record.PartitionKey));
            return (long)(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask<long> GetLatestSequenceAsync(CancellationToken cancellationToken = default) =>
        Guard("read", async ct => (long)(await ScalarAsync("SELECT last FROM feedback_sequence WHERE id = 1;", ct).ConfigureAwait(false))!, cancellationToken);

    /// <inheritdoc/>
    public ValueTask<long> CountTrainingSinceAsync(long afterSequence, CancellationToken cancellationToken = default) =>
        Guard("read", async ct => (long)(await ScalarAsync("SELECT COUNT(*) FROM feedback WHERE seq > @a AND NOT held_out;", ct, ("a", afterSequence)).ConfigureAwait(false))!, cancellationToken);

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<FeedbackRecord>> GetTrainingSinceAsync(long afterSequence, long upToSequence, CancellationToken cancellationToken = default) =>
        QueryAsync($"SELECT {Columns} FROM feedback WHERE seq > @a AND seq <= @b AND NOT held_out ORDER BY seq;", cancellationToken, ("a", afterSequence), ("b", upToSequence));

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<FeedbackRecord>> GetHeldOutAsync(long upToSequence, CancellationToken cancellationToken = default) =>
        QueryAsync($"SELECT {Columns} FROM feedback WHERE seq <= @b AND held_out ORDER BY seq;", cancellationToken, ("b", upToSequence));

    /// <inheritdoc/>
    public async ValueTask<IReadOnlyList<FeedbackRecord>> GetReplaySampleAsync(long upToSequence, int count, int seed, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count == 0) return [];
        var seqs = await Guard("read", ct => ReadLongsAsync($"SELECT seq FROM feedback WHERE seq <= @b AND NOT held_out AND {NotInLedger} ORDER BY seq;", ct, ("b", upToSequence)), cancellationToken).ConfigureAwait(false);
        if (seqs.Count > count)
        {
            // The same partial Fisher-Yates as the SQLite store: the same seed picks the same records.
            var rng = new Random(seed);
            for (var i = 0; i < count; i++)
            {
                var j = rng.Next(i, seqs.Count);
                (seqs[i], seqs[j]) = (seqs[j], seqs[i]);
            }
            seqs.RemoveRange(count, seqs.Count - count);
            seqs.Sort();
        }
        return await BySequenceAsync(seqs, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public ValueTask<int> DeleteUserAsync(string userId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(userId);
        return Guard("delete user", async ct =>
        {
            await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
            await using var tx = await c.BeginTransactionAsync(ct).ConfigureAwait(false);
            var n = await ExecuteAsync(c, tx, "DELETE FROM feedback WHERE user_id = @u;", ct, ("u", userId)).ConfigureAwait(false)
                + await ExecuteAsync(c, tx, "DELETE FROM quarantine WHERE user_id = @u;", ct, ("u", userId)).ConfigureAwait(false);
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return n;
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, CancellationToken cancellationToken = default) =>
        Guard("retention", ct => ExecuteAsync("DELETE FROM feedback WHERE created_at < @t;", ct, ("t", cutoff.ToUnixTimeMilliseconds())), cancellationToken);

    /// <inheritdoc/>
    public ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, long atOrBelowSequence, CancellationToken cancellationToken = default) =>
        Guard("retention", ct => ExecuteAsync("DELETE FROM feedback WHERE created_at < @t AND seq <= @s;", ct, ("t", cutoff.ToUnixTimeMilliseconds()), ("s", atOrBelowSequence)), cancellationToken);

    /// <inheritdoc/>
    public ValueTask<string?> GetStateAsync(string key, CancellationToken cancellationToken = default) =>
        Guard("read state", async ct => await ScalarAsync("SELECT value FROM state WHERE key = @k;", ct, ("k", key)).ConfigureAwait(false) as string, cancellationToken);

    /// <inheritdoc/>
    public async ValueTask SetStateAsync(string key, string value, CancellationToken cancellationToken = default) =>
        await Guard("write state", ct => ExecuteAsync("INSERT INTO state (key, value) VALUES (@k, @v) ON CONFLICT (key) DO UPDATE SET value = excluded.value;", ct, ("k", key), ("v", value)), cancellationToken).ConfigureAwait(false);

    /// <inheritdoc/>
    public ValueTask<bool> QuarantineAsync(long sequence, string reason, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(reason);
        return Guard("quarantine", ct => MoveToQuarantineAsync(sequence, reason, ct), cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<QuarantinedFeedback>> ListQuarantinedAsync(CancellationToken cancellationToken = default) =>
        Guard<IReadOnlyList<QuarantinedFeedback>>("read quarantine", async ct =>
        {
            var list = new List<QuarantinedFeedback>();
            await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
            await using var cmd = new NpgsqlCommand("SELECT seq, id, user_id, created_at, quarantined_at, reason FROM quarantine ORDER BY seq;", c);
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false))
                list.Add(new QuarantinedFeedback(r.GetInt64(0), r.GetString(1), r.IsDBNull(2) ? null : r.GetString(2),
                    DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(3)), DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(4)), r.GetString(5)));
            return list;
        }, cancellationToken);

    /// <inheritdoc/>
    public ValueTask<bool> DeleteQuarantinedAsync(long sequence, CancellationToken cancellationToken = default) =>
        Guard("delete quarantined", async ct => await ExecuteAsync("DELETE FROM quarantine WHERE seq = @s;", ct, ("s", sequence)).ConfigureAwait(false) > 0, cancellationToken);

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<long>> GetMissingAsync(IReadOnlyCollection<long> sequences, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        return Guard<IReadOnlyList<long>>("read", async ct =>
        {
            var wanted = sequences.Distinct().ToArray();
            var present = (await ReadLongsAsync("SELECT seq FROM feedback WHERE seq = ANY(@s);", ct, ("s", wanted)).ConfigureAwait(false)).ToHashSet();
            return wanted.Where(v => !present.Contains(v)).Order().ToArray();
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public string HashUserId(string userId)
    {
        ArgumentNullException.ThrowIfNull(userId);
        return Convert.ToHexStringLower(HMACSHA256.HashData(_secret, System.Text.Encoding.UTF8.GetBytes(userId)));
    }

    /// <summary>Releases the connection pool (when the store opened it).</summary>
    public void Dispose()
    {
        if (_ownsDatabase) _db.Dispose();
    }

    private async Task<bool> MoveToQuarantineAsync(long sequence, string reason, CancellationToken ct)
    {
        await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var tx = await c.BeginTransactionAsync(ct).ConfigureAwait(false);
        var n = await ExecuteAsync(c, tx, $"""
            INSERT INTO quarantine ({Columns}, quarantined_at, reason)
            SELECT {Columns}, @at, @reason FROM feedback WHERE seq = @s
            ON CONFLICT (seq) DO UPDATE SET quarantined_at = excluded.quarantined_at, reason = excluded.reason;
            """, ct, ("s", sequence), ("at", _time.GetUtcNow().ToUnixTimeMilliseconds()), ("reason", reason.Length > 4000 ? reason[..4000] : reason)).ConfigureAwait(false);
        await ExecuteAsync(c, tx, "DELETE FROM feedback WHERE seq = @s;", ct, ("s", sequence)).ConfigureAwait(false);
        await tx.CommitAsync(ct).ConfigureAwait(false);
        return n > 0;
    }

    private async Task<IReadOnlyList<FeedbackRecord>> BySequenceAsync(IReadOnlyList<long> seqs, CancellationToken ct) =>
        seqs.Count == 0 ? [] : await QueryAsync($"SELECT {Columns} FROM feedback WHERE seq = ANY(@s) ORDER BY seq;", ct, ("s", seqs.ToArray())).ConfigureAwait(false);

    private ValueTask<IReadOnlyList<FeedbackRecord>> QueryAsync(string sql, CancellationToken cancellationToken, params (string, object)[] ps) =>
        Guard<IReadOnlyList<FeedbackRecord>>("read", async ct =>
        {
            var list = new List<FeedbackRecord>();
            var damaged = new List<(long Seq, string Reason)>();
            await using (var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false))
            await using (var cmd = Command(c, null, sql, ps))
            await using (var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false))
            {
                while (await r.ReadAsync(ct).ConfigureAwait(false))
                {
                    var seq = r.GetInt64(0);
                    try
                    {
                        list.Add(FeedbackRows.Read(r, _db.Description));
                    }
                    catch (Exception e) when (e is not OperationCanceledException && !PostgreSqlDatabase.IsStoreError(e))
                    {
                        // A damaged row (for example a corrupt tensors column) must not fail every later read.
                        damaged.Add((seq, $"the stored record cannot be read: {e.GetType().Name}: {e.Message}"));
                    }
                }
            }
            foreach (var (seq, reason) in damaged) await MoveToQuarantineAsync(seq, reason, ct).ConfigureAwait(false);
            return list;
        }, cancellationToken);

    private async ValueTask<T> Guard<T>(string operation, Func<CancellationToken, Task<T>> body, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        try
        {
            return await body(ct).ConfigureAwait(false);
        }
        catch (Exception e) when (PostgreSqlDatabase.IsStoreError(e) && !(e is NpgsqlException { InnerException: OperationCanceledException } && ct.IsCancellationRequested))
        {
            throw _db.Wrap(e, operation);
        }
    }

    private async Task<List<long>> ReadLongsAsync(string sql, CancellationToken ct, params (string, object)[] ps)
    {
        var list = new List<long>();
        await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var cmd = Command(c, null, sql, ps);
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        while (await r.ReadAsync(ct).ConfigureAwait(false)) list.Add(r.GetInt64(0));
        return list;
    }

    private async Task<object?> ScalarAsync(string sql, CancellationToken ct, params (string, object)[] ps)
    {
        await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var cmd = Command(c, null, sql, ps);
        return await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false);
    }

    private async Task<int> ExecuteAsync(string sql, CancellationToken ct, params (string, object)[] ps)
    {
        await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        return await ExecuteAsync(c, null, sql, ct, ps).ConfigureAwait(false);
    }

    private static async Task<int> ExecuteAsync(NpgsqlConnection c, NpgsqlTransaction? tx, string sql, CancellationToken ct, params (string, object)[] ps)
    {
        await using var cmd = Command(c, tx, sql, ps);
        return await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    private static NpgsqlCommand Command(NpgsqlConnection c, NpgsqlTransaction? tx, string sql, (string, object)[] ps)
    {
        var cmd = new NpgsqlCommand(sql, c, tx);
        foreach (var (n, v) in ps) cmd.Parameters.AddWithValue(n, v);
        return cmd;
    }

    private static NpgsqlParameter Text(string name, string? value) =>
        new(name, NpgsqlTypes.NpgsqlDbType.Text) { Value = (object?)value ?? DBNull.Value };
}
