using System.Globalization;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.PostgreSql;

// The round ledger (records not confirmed by a promotion), the bounded held-out sample and atomic state creation:
// the SQLite store's semantics, with the round's commit fenced by the trainer lease when there is one.
public sealed partial class PostgreSqlFeedbackStore : IRoundLedger
{
    /// <summary>Replay excludes every record in the ledger (waiting, pending or retired).</summary>
    private const string NotInLedger = "seq NOT IN (SELECT seq FROM round_ledger)";

    private static string PrefixedColumns => string.Join(", ", Columns.Split(", ").Select(col => "f." + col));

    ValueTask<IReadOnlyList<FeedbackRecord>> IRoundLedger.GetUnconfirmedAsync(int maxRetries, CancellationToken cancellationToken) =>
        QueryAsync(
            $"SELECT {PrefixedColumns} FROM feedback f JOIN round_ledger l ON l.seq = f.seq " +
            "WHERE NOT f.held_out AND (l.state = 1 OR (l.state = 2 AND l.attempts <= @m)) ORDER BY f.seq;",
            cancellationToken, ("m", maxRetries));

    async ValueTask IRoundLedger.CommitRoundAsync(IReadOnlyCollection<long> trained, IReadOnlyCollection<long> deferred, bool promoted, int maxRetries,
        string watermarkKey, long upToSequence, CancellationToken cancellationToken) =>
        await Guard("commit round", async ct =>
        {
            await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
            await using var tx = await c.BeginTransactionAsync(ct).ConfigureAwait(false);
            // Only the lease holder commits a round: a trainer that lost its lease mid-round leaves no trace.
            if (_fence is not null) await _fence(c, tx, ct).ConfigureAwait(false);
            var t = trained.ToArray();
            if (promoted)
                await ExecuteAsync(c, tx, "DELETE FROM round_ledger WHERE seq = ANY(@s);", ct, ("s", t)).ConfigureAwait(false);
            else
                // A record deleted meanwhile (user deletion, retention) is skipped by the join.
                await ExecuteAsync(c, tx, """
                    INSERT INTO round_ledger (seq, state, attempts)
                    SELECT seq, CASE WHEN 1 > @m THEN 3 ELSE 2 END, 1 FROM feedback WHERE seq = ANY(@s)
                    ON CONFLICT (seq) DO UPDATE SET attempts = round_ledger.attempts + 1,
                        state = CASE WHEN round_ledger.attempts + 1 > @m THEN 3 ELSE 2 END;
                    """, ct, ("m", maxRetries), ("s", t)).ConfigureAwait(false);
            await ExecuteAsync(c, tx, "INSERT INTO round_ledger (seq, state, attempts) SELECT seq, 1, 0 FROM feedback WHERE seq = ANY(@s) ON CONFLICT (seq) DO NOTHING;",
                ct, ("s", deferred.ToArray())).ConfigureAwait(false);
            await ExecuteAsync(c, tx, "INSERT INTO state (key, value) VALUES (@k, @v) ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
                ct, ("k", watermarkKey), ("v", upToSequence.ToString(CultureInfo.InvariantCulture))).ConfigureAwait(false);
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return 0;
        }, cancellationToken).ConfigureAwait(false);

    ValueTask<IReadOnlyDictionary<LedgerState, long>> IRoundLedger.CountLedgerAsync(CancellationToken cancellationToken) =>
        Guard<IReadOnlyDictionary<LedgerState, long>>("read", async ct =>
        {
            var result = new Dictionary<LedgerState, long> { [LedgerState.Waiting] = 0, [LedgerState.Pending] = 0, [LedgerState.Retired] = 0 };
            await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
            await using var cmd = new Npgsql.NpgsqlCommand("SELECT state, COUNT(*) FROM round_ledger GROUP BY state;", c);
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false)) result[(LedgerState)r.GetInt32(0)] = r.GetInt64(1);
            return result;
        }, cancellationToken);

    ValueTask<LedgerState?> IRoundLedger.GetLedgerStateAsync(long sequence, CancellationToken cancellationToken) =>
        Guard("read", async ct => await ScalarAsync("SELECT state FROM round_ledger WHERE seq = @s;", ct, ("s", sequence)).ConfigureAwait(false) is int v ? (LedgerState?)v : null, cancellationToken);

    ValueTask<IReadOnlyList<FeedbackRecord>> IRoundLedger.GetHeldOutSampleAsync(long upToSequence, int recent, int older, int seed, CancellationToken cancellationToken) =>
        Guard("read", async ct =>
        {
            var all = new List<(long Seq, long Label)>();
            await using (var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false))
            await using (var cmd = new Npgsql.NpgsqlCommand("SELECT seq, label_index FROM feedback WHERE seq <= @b AND held_out ORDER BY seq;", c))
            {
                cmd.Parameters.AddWithValue("b", upToSequence);
                await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
                while (await r.ReadAsync(ct).ConfigureAwait(false)) all.Add((r.GetInt64(0), r.GetInt64(1)));
            }
            var split = Math.Max(0, all.Count - recent);
            var chosen = StratifiedSample.Take(all.GetRange(0, split), s => s.Label, older, seed).Select(s => s.Seq)
                .Concat(all.Skip(split).Select(s => s.Seq)).Order().ToList();
            return await BySequenceAsync(chosen, ct).ConfigureAwait(false);
        }, cancellationToken);

    ValueTask<string> IRoundLedger.GetOrAddStateAsync(string key, string value, CancellationToken cancellationToken) =>
        Guard("write state", async ct => (string)(await ScalarAsync(
            "INSERT INTO state (key, value) VALUES (@k, @v) ON CONFLICT (key) DO NOTHING; SELECT value FROM state WHERE key = @k;", ct, ("k", key), ("v", value)).ConfigureAwait(false))!, cancellationToken);
}
