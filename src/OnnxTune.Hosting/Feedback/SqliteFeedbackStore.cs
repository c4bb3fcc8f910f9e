using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Data.Sqlite;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting;

/// <summary>
/// The default <see cref="IFeedbackStore"/>: one SQLite file in WAL mode with <c>synchronous=FULL</c>, so an
/// appended record survives a crash or power loss once <see cref="AppendAsync"/> returns. The store is held
/// exclusively for its lifetime: a lock file (<c>&lt;database&gt;.lock</c>) refuses a second holder with
/// <see cref="StoreLockedException"/>, and the database runs in <c>locking_mode=EXCLUSIVE</c> over one connection,
/// so SQLite keeps its WAL index in heap memory instead of a memory-mapped <c>-shm</c> file (an unwritable or
/// truncated <c>-shm</c> would otherwise kill the process with SIGBUS). Thread-safe: calls are serialised on the
/// connection. Every failure is a <see cref="FeedbackStoreException"/> (busy, full, read-only, corrupt, I/O).
/// </summary>
public sealed partial class SqliteFeedbackStore : IFeedbackStore, IFeedbackMaintenance, IPartitionedFeedbackStore, IDisposable
{
    private const string Columns = "seq, id, created_at, user_id, text, tensors, label_index, label_name, weight, metadata, held_out, partition_key";
    private const string SecretKey = "user_hash_secret";
    private readonly string _connectionString;
    private readonly object _sync = new();
    private readonly StoreLock _lock;
    private readonly TimeProvider _time;
    private readonly byte[] _secret;
    private SqliteConnection? _connection;
    private int _disposed;

    /// <summary>Opens (creating if needed) the database at <paramref name="path"/> and takes its lock for the store's lifetime.</summary>
    /// <exception cref="StoreLockedException">Another process (or store object) holds the database.</exception>
    /// <exception cref="FeedbackStoreException">The file cannot be opened as a feedback database (read-only, corrupt, I/O).</exception>
    public SqliteFeedbackStore(string path) : this(path, null) { }

    /// <summary>Opens the database with a clock for quarantine timestamps.</summary>
    /// <exception cref="StoreLockedException">Another process (or store object) holds the database.</exception>
    /// <exception cref="FeedbackStoreException">The file cannot be opened as a feedback database (read-only, corrupt, I/O).</exception>
    public SqliteFeedbackStore(string path, TimeProvider? timeProvider)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = System.IO.Path.GetFullPath(path);
        _time = timeProvider ?? TimeProvider.System;
        try { Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!); }
        catch (Exception e) when (FeedbackStoreErrors.IsStoreError(e)) { throw FeedbackStoreErrors.Wrap(e, Path, "open"); }
        // The lock also proves the folder writable before SQLite maps or writes anything.
        _lock = StoreLock.Acquire(Path + ".lock");
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = Path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = false,
            DefaultTimeout = 5,
        }.ToString();
        try
        {
            using var c = Open();
            Execute(c, """
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
                CREATE TABLE IF NOT EXISTS quarantine (
                    seq INTEGER PRIMARY KEY,
                    id TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    user_id TEXT NULL,
                    text TEXT NULL,
                    tensors TEXT NULL,
                    label_index INTEGER NOT NULL,
                    label_name TEXT NULL,
                    weight REAL NOT NULL,
                    metadata TEXT NULL,
                    held_out INTEGER NOT NULL,
                    quarantined_at INTEGER NOT NULL,
                    reason TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS ix_quarantine_user ON quarantine(user_id);
                """);
            // Databases written before partition keys existed gain the column (NULL: shared feedback only).
            foreach (var table in new[] { "feedback", "quarantine" })
                if (Scalar(c, $"SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = 'partition_key';") is 0L)
                    Execute(c, $"ALTER TABLE {table} ADD COLUMN partition_key TEXT NULL;");
            Execute(c, "CREATE INDEX IF NOT EXISTS ix_feedback_partition ON feedback(partition_key, seq);");
            if (Scalar(c, "SELECT value FROM state WHERE key = $k;", ("$k", SecretKey)) is string hex)
                _secret = Convert.FromHexString(hex);
            else
            {
                _secret = RandomNumberGenerator.GetBytes(32);
                using var cmd = c.CreateCommand();
                cmd.CommandText = "INSERT INTO state (key, value) VALUES ($k, $v);";
                cmd.Parameters.AddWithValue("$k", SecretKey);
                cmd.Parameters.AddWithValue("$v", Convert.ToHexStringLower(_secret));
                cmd.ExecuteNonQuery();
            }
            Execute(c, LedgerSchema);
        }
        catch (Exception e) when (FeedbackStoreErrors.IsStoreError(e) || e is FormatException)
        {
            CloseConnection();
            _lock.Dispose();
            throw e is FormatException ? new FeedbackStoreException(FeedbackStoreErrorKind.Corrupt, Path, "open", $"Feedback store '{Path}': the user hash secret is damaged: {e.Message}", e)
                : FeedbackStoreErrors.Wrap(e, Path, "open");
        }
        catch
        {
            CloseConnection();
            _lock.Dispose();
            throw;
        }
    }

    /// <summary>Gets the database file path.</summary>
    public string Path { get; }

    /// <inheritdoc/>
    /// <exception cref="FeedbackStoreException">The record could not be stored (busy, full, read-only, vanished, I/O).</exception>
    public ValueTask<long> AppendAsync(FeedbackRecord record, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(Guard("append", write: true, () =>
        {
            using var c = Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = """
                INSERT INTO feedback (id, created_at, user_id, text, tensors, label_index, label_name, weight, metadata, held_out, partition_key)
                VALUES ($id, $created, $user, $text, $tensors, $li, $ln, $w, $meta, $ho, $pk) RETURNING seq;
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
            cmd.Parameters.AddWithValue("$pk", (object?)record.PartitionKey ?? DBNull.Value);
            return (long)cmd.ExecuteScalar()!;
        }));
    }

    /// <inheritdoc/>
    public ValueTask<long> GetLatestSequenceAsync(CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Guard("read", write: false, () =>
        {
            using var c = Open();
            // sqlite_sequence keeps the highest seq ever handed out, even after deletes.
            var v = Scalar(c, "SELECT seq FROM sqlite_sequence WHERE name = 'feedback';");
            return v is long l ? l : 0L;
        }));

    /// <inheritdoc/>
    public ValueTask<long> CountTrainingSinceAsync(long afterSequence, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Guard("read", write: false, () =>
        {
            using var c = Open();
            return (long)Scalar(c, "SELECT COUNT(*) FROM feedback WHERE seq > $a AND held_out = 0;", ("$a", afterSequence))!;
        }));

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
    /// <exception cref="FeedbackStoreException">The delete (or the checkpoint that purges the deleted content from the WAL) failed.</exception>
    public ValueTask<int> DeleteUserAsync(string userId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(userId);
        return ValueTask.FromResult(Guard("delete user", write: true, () =>
            Delete("DELETE FROM feedback WHERE user_id = $u;", ("$u", userId)) + Delete("DELETE FROM quarantine WHERE user_id = $u;", ("$u", userId))));
    }

    /// <inheritdoc/>
    public ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Guard("retention", write: true, () => Delete("DELETE FROM feedback WHERE created_at < $t;", ("$t", cutoff.ToUnixTimeMilliseconds()))));

    /// <inheritdoc/>
    public ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, long atOrBelowSequence, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Guard("retention", write: true, () =>
            Delete("DELETE FROM feedback WHERE created_at < $t AND seq <= $s;", ("$t", cutoff.ToUnixTimeMilliseconds()), ("$s", atOrBelowSequence))));

    /// <inheritdoc/>
    public ValueTask<string?> GetStateAsync(string key, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Guard("read state", write: false, () =>
        {
            using var c = Open();
            return Scalar(c, "SELECT value FROM state WHERE key = $k;", ("$k", key)) as string;
        }));

    /// <inheritdoc/>
    public ValueTask SetStateAsync(string key, string value, CancellationToken cancellationToken = default)
    {
        Guard("write state", write: true, () =>
        {
            using var c = Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "INSERT INTO state (key, value) VALUES ($k, $v) ON CONFLICT(key) DO UPDATE SET value = excluded.value;";
            cmd.Parameters.AddWithValue("$k", key);
            cmd.Parameters.AddWithValue("$v", value);
            return cmd.ExecuteNonQuery();
        });
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public ValueTask<bool> QuarantineAsync(long sequence, string reason, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(reason);
        return ValueTask.FromResult(Guard("quarantine", write: true, () => MoveToQuarantine(sequence, reason)));
    }

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<QuarantinedFeedback>> ListQuarantinedAsync(CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Guard<IReadOnlyList<QuarantinedFeedback>>("read quarantine", write: false, () =>
        {
            var list = new List<QuarantinedFeedback>();
            using var c = Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT seq, id, user_id, created_at, quarantined_at, reason FROM quarantine ORDER BY seq;";
            using var r = cmd.ExecuteReader();
            while (r.Read())
                list.Add(new QuarantinedFeedback(r.GetInt64(0), r.GetString(1), r.IsDBNull(2) ? null : r.GetString(2),
                    DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(3)), DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(4)), r.GetString(5)));
            return list;
        }));

    /// <inheritdoc/>
    public ValueTask<bool> DeleteQuarantinedAsync(long sequence, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Guard("delete quarantined", write: true, () => Delete("DELETE FROM quarantine WHERE seq = $s;", ("$s", sequence)) > 0));

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<long>> GetMissingAsync(IReadOnlyCollection<long> sequences, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        return ValueTask.FromResult(Guard<IReadOnlyList<long>>("read", write: false, () =>
        {
            var present = new HashSet<long>();
            using var c = Open();
            foreach (var chunk in sequences.Distinct().Chunk(500))
            {
                using var cmd = c.CreateCommand();
                cmd.CommandText = $"SELECT seq FROM feedback WHERE seq IN ({string.Join(",", chunk.Select(v => v.ToString(CultureInfo.InvariantCulture)))});";
                using var r = cmd.ExecuteReader();
                while (r.Read()) present.Add(r.GetInt64(0));
            }
            return sequences.Where(v => !present.Contains(v)).Distinct().Order().ToArray();
        }));
    }

    /// <inheritdoc/>
    public string HashUserId(string userId)
    {
        ArgumentNullException.ThrowIfNull(userId);
        return Convert.ToHexStringLower(HMACSHA256.HashData(_secret, System.Text.Encoding.UTF8.GetBytes(userId)));
    }

    /// <summary>Test hook: caps the database size in pages (SQLite then fails writes with SQLITE_FULL, as on a full disk).</summary>
    internal void SetMaxPageCount(long pages) => Guard("limit", write: false, () =>
    {
        using var c = Open();
        return Scalar(c, $"PRAGMA max_page_count = {pages.ToString(CultureInfo.InvariantCulture)};");
    });

    /// <summary>Closes the connection and releases the store lock.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        lock (_sync) CloseConnection();
        _lock.Dispose();
    }

    private void CloseConnection()
    {
        if (_connection is null) return;
        try { _connection.Dispose(); }
        catch (SqliteException) { }
        _connection = null;
    }

    private bool MoveToQuarantine(long sequence, string reason)
    {
        using var c = Open();
        using var tx = c.Connection.BeginTransaction();
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = $"""
            INSERT OR REPLACE INTO quarantine ({Columns}, quarantined_at, reason)
            SELECT {Columns}, $at, $reason FROM feedback WHERE seq = $s;
            DELETE FROM feedback WHERE seq = $s;
            """;
        cmd.Parameters.AddWithValue("$s", sequence);
        cmd.Parameters.AddWithValue("$at", _time.GetUtcNow().ToUnixTimeMilliseconds());
        cmd.Parameters.AddWithValue("$reason", reason.Length > 4000 ? reason[..4000] : reason);
        var n = cmd.ExecuteNonQuery();
        tx.Commit();
        return n > 0;
    }

    private int Delete(string sql, params (string, object)[] ps)
    {
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        foreach (var (name, v) in ps) cmd.Parameters.AddWithValue(name, v);
        var n = cmd.ExecuteNonQuery();
        // secure_delete zeroes the rows' pages; the checkpoint moves that into the main file and empties the WAL.
        if (n > 0) Checkpoint(c);
        return n;
    }

    private void Checkpoint(Lease c)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA wal_checkpoint(TRUNCATE);";
        using var r = cmd.ExecuteReader();
        // One row: busy (1 when the checkpoint could not finish), WAL frames, frames checkpointed.
        if (r.Read() && r.GetInt64(0) != 0)
            throw new FeedbackStoreException(FeedbackStoreErrorKind.Busy, Path, "checkpoint",
                $"Feedback store '{Path}': the records were deleted, but the WAL checkpoint that purges their content did not finish ({r.GetInt64(2)} of {r.GetInt64(1)} frames); retry the deletion.");
    }

    private IReadOnlyList<FeedbackRecord> Query(string sql, CancellationToken ct, params (string, object)[] ps) =>
        Guard<IReadOnlyList<FeedbackRecord>>("read", write: false, () =>
        {
            var list = new List<FeedbackRecord>();
            var damaged = new List<(long Seq, string Reason)>();
            using var c = Open();
            using (var cmd = c.CreateCommand())
            {
                cmd.CommandText = sql;
                foreach (var (n, v) in ps) cmd.Parameters.AddWithValue(n, v);
                using var r = cmd.ExecuteReader();
                while (r.Read())
                {
                    ct.ThrowIfCancellationRequested();
                    var seq = r.GetInt64(0);
                    try
                    {
                        list.Add(FeedbackRows.Read(r, Path));
                    }
                    catch (Exception e) when (e is not OperationCanceledException and not SqliteException)
                    {
                        // A damaged row (for example a corrupt tensors column) must not fail every later read.
                        damaged.Add((seq, $"the stored record cannot be read: {e.GetType().Name}: {e.Message}"));
                    }
                }
            }
            foreach (var (seq, reason) in damaged) MoveToQuarantine(seq, reason);
            return list;
        });

    private T Guard<T>(string operation, bool write, Func<T> body)
    {
        lock (_sync)
        {
            try
            {
                // A deleted or moved database would take SQLite's writes to an unlinked file: refuse instead.
                if (write && !File.Exists(Path))
                    throw new FeedbackStoreException(FeedbackStoreErrorKind.IO, Path, operation,
                        $"Feedback store '{Path}': {operation} failed (IO): the database file vanished (its folder was deleted or moved).");
                return body();
            }
            catch (Exception e) when (FeedbackStoreErrors.IsStoreError(e))
            {
                var typed = FeedbackStoreErrors.Wrap(e, Path, operation);
                // The connection may be unusable after an I/O error: reopen on the next call.
                if (typed.Kind is not FeedbackStoreErrorKind.Busy) CloseConnection();
                if (typed.Kind == FeedbackStoreErrorKind.IO && (!FolderWritable() || !FileWritable(Path) || !FileWritable(Path + "-wal")))
                    typed = new FeedbackStoreException(FeedbackStoreErrorKind.ReadOnly, Path, operation,
                        $"Feedback store '{Path}': {operation} failed (ReadOnly): the database or its folder cannot be written: {e.Message}", e);
                throw typed;
            }
        }
    }

    private bool FolderWritable()
    {
        var probe = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(Path)!, $".probe-{Guid.NewGuid():N}");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static bool FileWritable(string path)
    {
        try
        {
            if (!File.Exists(path)) return true;
            using (File.OpenHandle(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete)) { }
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private Lease Open()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        Monitor.Enter(_sync);
        try
        {
            if (_connection is null)
            {
                var c = new SqliteConnection(_connectionString);
                try
                {
                    c.Open();
                    // EXCLUSIVE before the first WAL access: the WAL index lives in heap memory, no -shm is mapped.
                    // FULL: fsync the WAL on every commit. secure_delete: zero deleted content.
                    Execute(c, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA foreign_keys=ON;");
                }
                catch
                {
                    c.Dispose();
                    throw;
                }
                _connection = c;
            }
            return new Lease(_connection, _sync);
        }
        catch
        {
            Monitor.Exit(_sync);
            throw;
        }
    }

    /// <summary>The shared connection, held under the store's lock until disposed.</summary>
    private sealed class Lease(SqliteConnection connection, object sync) : IDisposable
    {
        public SqliteConnection Connection => connection;

        public SqliteCommand CreateCommand() => connection.CreateCommand();

        public void Dispose() => Monitor.Exit(sync);
    }

    private static void Execute(SqliteConnection c, string sql)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    private static void Execute(Lease c, string sql) => Execute(c.Connection, sql);

    private static object? Scalar(Lease c, string sql, params (string, object)[] ps)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        foreach (var (n, v) in ps) cmd.Parameters.AddWithValue(n, v);
        return cmd.ExecuteScalar();
    }
}
