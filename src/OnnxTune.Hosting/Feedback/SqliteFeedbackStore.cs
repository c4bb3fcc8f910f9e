using Microsoft.Data.Sqlite;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting;

/// <summary>
/// The default <see cref="IFeedbackStore"/>: one SQLite file in WAL mode with <c>synchronous=FULL</c>, so an
/// appended record survives a crash or power loss once <see cref="AppendAsync"/> returns. Thread-safe: every
/// call uses its own pooled connection.
/// </summary>
public sealed partial class SqliteFeedbackStore : IFeedbackStore, IDisposable
{
    private const string Columns = "seq, id, created_at, user_id, text, tensors, label_index, label_name, weight, metadata, held_out";
    private readonly string _connectionString;
    private int _disposed;

    /// <summary>Opens (creating if needed) the database at <paramref name="path"/>.</summary>
    /// <exception cref="OnnxTuneException">The file cannot be opened as a feedback database.</exception>
    public SqliteFeedbackStore(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = Path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            DefaultTimeout = 30,
        }.ToString();
        try
        {
            using var c = Open();
            Execute(c, """
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS feedback (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    created_at INTEGER NOT NULL,
                    user_id TEXT NULL,
                    text TEXT NULL,
                    tensors TEXT NULL,
                    label_index INTEGER NOT NULL,
                    label_name TEXT NULL,
                    weight REAL NOT NULL,
                    metadata TEXT NULL,
                    held_out INTEGER NOT NULL);
                CREATE INDEX IF NOT EXISTS ix_feedback_user ON feedback(user_id);
                CREATE INDEX IF NOT EXISTS ix_feedback_created ON feedback(created_at);
                CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """);
            Execute(c, LedgerSchema);
        }
        catch (SqliteException e)
        {
            throw new OnnxTuneException($"Cannot open feedback database '{Path}': {e.Message}", e);
        }
    }

    /// <summary>Gets the database file path.</summary>
    public string Path { get; }

    /// <inheritdoc/>
    public ValueTask<long> AppendAsync(FeedbackRecord record, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        cancellationToken.ThrowIfCancellationRequested();
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = """
            INSERT INTO feedback (id, created_at, user_id, text, tensors, label_index, label_name, weight, metadata, held_out)
            VALUES ($id, $created, $user, $text, $tensors, $li, $ln, $w, $meta, $ho) RETURNING seq;
            """;
        cmd.Parameters.AddWithValue("$id", record.Id);
        cmd.Parameters.AddWithValue("$created", record.CreatedAt.ToUnixTimeMilliseconds());
        cmd.Parameters.AddWithValue("$user", (object?)record.UserId ?? DBNull.Value);
        cmd.Parameters.AddWithValue("$text", (object?)record.Text ?? DBNull.Value);
        cmd.Parameters.AddWithValue("$tensors", record.Tensors is { } t ? FeedbackJson.WriteTensors(t) : DBNull.Value);
        cmd.Parameters.AddWithValue("$li", record.LabelIndex);
        cmd.Parameters.AddWithValue("$ln", (object?)record.LabelName ?? DBNull.Value);
        cmd.Parameters.AddWithValue("$w", (double)record.Weight);
        cmd.Parameters.AddWithValue("$meta", record.Metadata is { Count: > 0 } m ? FeedbackJson.WriteMetadata(m) : DBNull.Value);
        cmd.Parameters.AddWithValue("$ho", record.HeldOut ? 1 : 0);
        return ValueTask.FromResult((long)cmd.ExecuteScalar()!);
    }

    /// <inheritdoc/>
    public ValueTask<long> GetLatestSequenceAsync(CancellationToken cancellationToken = default)
    {
        using var c = Open();
        // sqlite_sequence keeps the highest seq ever handed out, even after deletes.
        var v = Scalar(c, "SELECT seq FROM sqlite_sequence WHERE name = 'feedback';");
        return ValueTask.FromResult(v is long l ? l : 0L);
    }

    /// <inheritdoc/>
    public ValueTask<long> CountTrainingSinceAsync(long afterSequence, CancellationToken cancellationToken = default)
    {
        using var c = Open();
        return ValueTask.FromResult((long)Scalar(c, "SELECT COUNT(*) FROM feedback WHERE seq > $a AND held_out = 0;", ("$a", afterSequence))!);
    }

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<FeedbackRecord>> GetTrainingSinceAsync(long afterSequence, long upToSequence, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Query($"SELECT {Columns} FROM feedback WHERE seq > $a AND seq <= $b AND held_out = 0 ORDER BY seq;",
            cancellationToken, ("$a", afterSequence), ("$b", upToSequence)));

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<FeedbackRecord>> GetHeldOutAsync(long upToSequence, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Query($"SELECT {Columns} FROM feedback WHERE seq <= $b AND held_out = 1 ORDER BY seq;",
            cancellationToken, ("$b", upToSequence)));

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<FeedbackRecord>> GetReplaySampleAsync(long upToSequence, int count, int seed, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count == 0) return ValueTask.FromResult<IReadOnlyList<FeedbackRecord>>([]);
        var seqs = new List<long>();
        using (var c = Open())
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = $"SELECT seq FROM feedback WHERE seq <= $b AND held_out = 0 AND {NotInLedger} ORDER BY seq;";
            cmd.Parameters.AddWithValue("$b", upToSequence);
            using var r = cmd.ExecuteReader();
            while (r.Read()) seqs.Add(r.GetInt64(0));
        }
        if (seqs.Count > count)
        {
            // Partial Fisher-Yates with a seeded generator: the same seed gives the same sample.
            var rng = new Random(seed);
            for (var i = 0; i < count; i++)
            {
                var j = rng.Next(i, seqs.Count);
                (seqs[i], seqs[j]) = (seqs[j], seqs[i]);
            }
            seqs.RemoveRange(count, seqs.Count - count);
            seqs.Sort();
        }
        var chosen = new List<FeedbackRecord>(seqs.Count);
        foreach (var chunk in seqs.Chunk(500))
            chosen.AddRange(Query($"SELECT {Columns} FROM feedback WHERE seq IN ({string.Join(",", chunk)}) ORDER BY seq;", cancellationToken));
        return ValueTask.FromResult<IReadOnlyList<FeedbackRecord>>(chosen);
    }

    /// <inheritdoc/>
    public ValueTask<int> DeleteUserAsync(string userId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(userId);
        return ValueTask.FromResult(Delete("DELETE FROM feedback WHERE user_id = $u;", ("$u", userId)));
    }

    /// <inheritdoc/>
    public ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Delete("DELETE FROM feedback WHERE created_at < $t;", ("$t", cutoff.ToUnixTimeMilliseconds())));

    /// <inheritdoc/>
    public ValueTask<string?> GetStateAsync(string key, CancellationToken cancellationToken = default)
    {
        using var c = Open();
        return ValueTask.FromResult(Scalar(c, "SELECT value FROM state WHERE key = $k;", ("$k", key)) as string);
    }

    /// <inheritdoc/>
    public ValueTask SetStateAsync(string key, string value, CancellationToken cancellationToken = default)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "INSERT INTO state (key, value) VALUES ($k, $v) ON CONFLICT(key) DO UPDATE SET value = excluded.value;";
        cmd.Parameters.AddWithValue("$k", key);
        cmd.Parameters.AddWithValue("$v", value);
        cmd.ExecuteNonQuery();
        return ValueTask.CompletedTask;
    }

    /// <summary>Closes pooled connections to the file.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        using var c = new SqliteConnection(_connectionString);
        SqliteConnection.ClearPool(c);
    }

    private int Delete(string sql, (string, object) p)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.Parameters.AddWithValue(p.Item1, p.Item2);
        var n = cmd.ExecuteNonQuery();
        // secure_delete zeroes the rows' pages; the checkpoint moves that into the main file and empties the WAL.
        if (n > 0) Execute(c, "PRAGMA wal_checkpoint(TRUNCATE);");
        return n;
    }

    private IReadOnlyList<FeedbackRecord> Query(string sql, CancellationToken ct, params (string, object)[] ps)
    {
        var list = new List<FeedbackRecord>();
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        foreach (var (n, v) in ps) cmd.Parameters.AddWithValue(n, v);
        using var r = cmd.ExecuteReader();
        while (r.Read())
        {
            ct.ThrowIfCancellationRequested();
            list.Add(new FeedbackRecord
            {
                Sequence = r.GetInt64(0),
                Id = r.GetString(1),
                CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(2)),
                UserId = r.IsDBNull(3) ? null : r.GetString(3),
                Text = r.IsDBNull(4) ? null : r.GetString(4),
                Tensors = r.IsDBNull(5) ? null : FeedbackJson.ReadTensors(r.GetString(5), $"{Path} record {r.GetString(1)}"),
                LabelIndex = r.GetInt64(6),
                LabelName = r.IsDBNull(7) ? null : r.GetString(7),
                Weight = (float)r.GetDouble(8),
                Metadata = r.IsDBNull(9) ? null : FeedbackJson.ReadMetadata(r.GetString(9)),
                HeldOut = r.GetInt64(10) != 0,
            });
        }
        return list;
    }

    private SqliteConnection Open()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var c = new SqliteConnection(_connectionString);
        c.Open();
        // Per-connection settings: fsync the WAL on every commit, and zero deleted content.
        Execute(c, "PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA foreign_keys=ON;");
        return c;
    }

    private static void Execute(SqliteConnection c, string sql)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    private static object? Scalar(SqliteConnection c, string sql, params (string, object)[] ps)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        foreach (var (n, v) in ps) cmd.Parameters.AddWithValue(n, v);
        return cmd.ExecuteScalar();
    }
}
