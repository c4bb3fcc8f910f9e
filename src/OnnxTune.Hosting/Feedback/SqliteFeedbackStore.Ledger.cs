using Microsoft.Data.Sqlite;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting;

// The round ledger (records not confirmed by a promotion), the bounded held-out sample and atomic state creation.
public sealed partial class SqliteFeedbackStore : IRoundLedger
{
    private const string LedgerSchema = """
        CREATE TABLE IF NOT EXISTS round_ledger (
            seq INTEGER PRIMARY KEY REFERENCES feedback(seq) ON DELETE CASCADE,
            state INTEGER NOT NULL,
            attempts INTEGER NOT NULL);
        """;

    /// <summary>Replay excludes every record in the ledger (waiting, pending or retired).</summary>
    private const string NotInLedger = "seq NOT IN (SELECT seq FROM round_ledger)";

    ValueTask<IReadOnlyList<FeedbackRecord>> IRoundLedger.GetUnconfirmedAsync(int maxRetries, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Query(
            $"SELECT {PrefixedColumns} FROM feedback f JOIN round_ledger l ON l.seq = f.seq " +
            "WHERE f.held_out = 0 AND (l.state = 1 OR (l.state = 2 AND l.attempts <= $m)) ORDER BY f.seq;",
            cancellationToken, ("$m", maxRetries)));

    ValueTask IRoundLedger.CommitRoundAsync(IReadOnlyCollection<long> trained, IReadOnlyCollection<long> deferred, bool promoted, int maxRetries,
        string watermarkKey, long upToSequence, CancellationToken cancellationToken)
    {
        using var c = Open();
        using var tx = c.Connection.BeginTransaction();
        if (promoted)
            foreach (var chunk in trained.Chunk(500))
                Run(c.Connection, tx, $"DELETE FROM round_ledger WHERE seq IN ({string.Join(",", chunk)});");
        else
            foreach (var chunk in trained.Chunk(500))
                // A record deleted meanwhile (user deletion, retention) is skipped by the join.
                Run(c.Connection, tx, $"""
                    INSERT INTO round_ledger (seq, state, attempts)
                    SELECT seq, CASE WHEN 1 > $m THEN 3 ELSE 2 END, 1 FROM feedback WHERE seq IN ({string.Join(",", chunk)})
                    ON CONFLICT(seq) DO UPDATE SET attempts = attempts + 1, state = CASE WHEN attempts + 1 > $m THEN 3 ELSE 2 END;
                    """, ("$m", maxRetries));
        foreach (var chunk in deferred.Chunk(500))
            Run(c.Connection, tx, $"INSERT OR IGNORE INTO round_ledger (seq, state, attempts) SELECT seq, 1, 0 FROM feedback WHERE seq IN ({string.Join(",", chunk)});");
        Run(c.Connection, tx, "INSERT INTO state (key, value) VALUES ($k, $v) ON CONFLICT(key) DO UPDATE SET value = excluded.value;",
            ("$k", watermarkKey), ("$v", upToSequence.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        tx.Commit();
        return ValueTask.CompletedTask;
    }

    ValueTask<IReadOnlyDictionary<LedgerState, long>> IRoundLedger.CountLedgerAsync(CancellationToken cancellationToken)
    {
        var result = new Dictionary<LedgerState, long> { [LedgerState.Waiting] = 0, [LedgerState.Pending] = 0, [LedgerState.Retired] = 0 };
        using var c = Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT state, COUNT(*) FROM round_ledger GROUP BY state;";
        using var r = cmd.ExecuteReader();
        while (r.Read()) result[(LedgerState)r.GetInt64(0)] = r.GetInt64(1);
        return ValueTask.FromResult<IReadOnlyDictionary<LedgerState, long>>(result);
    }

    ValueTask<LedgerState?> IRoundLedger.GetLedgerStateAsync(long sequence, CancellationToken cancellationToken)
    {
        using var c = Open();
        var v = Scalar(c, "SELECT state FROM round_ledger WHERE seq = $s;", ("$s", sequence));
        return ValueTask.FromResult(v is long l ? (LedgerState?)l : null);
    }

    ValueTask<IReadOnlyList<FeedbackRecord>> IRoundLedger.GetHeldOutSampleAsync(long upToSequence, int recent, int older, int seed, CancellationToken cancellationToken)
    {
        var all = new List<(long Seq, long Label)>();
        using (var c = Open())
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT seq, label_index FROM feedback WHERE seq <= $b AND held_out = 1 ORDER BY seq;";
            cmd.Parameters.AddWithValue("$b", upToSequence);
            using var r = cmd.ExecuteReader();
            while (r.Read()) all.Add((r.GetInt64(0), r.GetInt64(1)));
        }
        var split = Math.Max(0, all.Count - recent);
        var chosen = StratifiedSample.Take(all.GetRange(0, split), s => s.Label, older, seed).Select(s => s.Seq)
            .Concat(all.Skip(split).Select(s => s.Seq)).ToList();
        var records = new List<FeedbackRecord>(chosen.Count);
        foreach (var chunk in chosen.Chunk(500))
            records.AddRange(Query($"SELECT {Columns} FROM feedback WHERE seq IN ({string.Join(",", chunk)}) ORDER BY seq;", cancellationToken));
        return ValueTask.FromResult<IReadOnlyList<FeedbackRecord>>(records);
    }

    ValueTask<string> IRoundLedger.GetOrAddStateAsync(string key, string value, CancellationToken cancellationToken)
    {
        using var c = Open();
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "INSERT OR IGNORE INTO state (key, value) VALUES ($k, $v);";
            cmd.Parameters.AddWithValue("$k", key);
            cmd.Parameters.AddWithValue("$v", value);
            cmd.ExecuteNonQuery();
        }
        return ValueTask.FromResult((string)Scalar(c, "SELECT value FROM state WHERE key = $k;", ("$k", key))!);
    }

    private static string PrefixedColumns => string.Join(", ", Columns.Split(", ").Select(col => "f." + col));

    private static void Run(SqliteConnection c, SqliteTransaction tx, string sql, params (string, object)[] ps)
    {
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        foreach (var (n, v) in ps) cmd.Parameters.AddWithValue(n, v);
        cmd.ExecuteNonQuery();
    }
}
