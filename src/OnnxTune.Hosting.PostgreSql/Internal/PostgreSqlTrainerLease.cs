using Microsoft.Extensions.Logging;
using Npgsql;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.PostgreSql.Internal;

/// <summary>
/// The trainer lease: one row (<c>trainer_lease</c>) with a holder, a fencing token and an expiry on the server's
/// clock. Taking an expired lease increments the token; the holder renews it every third of its duration (also
/// during a round, from a timer). Every write only the trainer may make (adding or promoting a version, committing
/// a round) locks the row in its own transaction and checks holder, token and expiry there, so a trainer that
/// paused past its expiry cannot promote after another instance took over.
/// </summary>
internal sealed class PostgreSqlTrainerLease : ITrainerLease, IAsyncDisposable
{
    private readonly PostgreSqlDatabase _db;
    private readonly TimeSpan _duration;
    private readonly ILogger _logger;
    private readonly Lock _sync = new();
    private readonly CancellationTokenSource _stop = new();
    private long _token;
    private Task? _renewal;
    private int _disposed;

    public PostgreSqlTrainerLease(PostgreSqlDatabase db, TimeSpan duration, ILogger logger)
    {
        _db = db;
        _duration = duration;
        _logger = logger;
        Holder = $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}";
    }

    /// <summary>This instance's holder name (host, pid, a random suffix).</summary>
    public string Holder { get; }

    /// <summary>The fencing token while held, else 0.</summary>
    public long Token => Interlocked.Read(ref _token);

    public async ValueTask<bool> TryHoldAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _disposed) != 0) return false;
        if (Token != 0 && await RenewAsync(cancellationToken).ConfigureAwait(false)) return true;
        await using var c = await _db.DataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand("""
            INSERT INTO trainer_lease (id, holder, token, expires_at) VALUES (1, @h, 1, clock_timestamp() + @d)
            ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, token = trainer_lease.token + 1, expires_at = excluded.expires_at
                WHERE trainer_lease.expires_at <= clock_timestamp()
            RETURNING token;
            """, c);
        cmd.Parameters.AddWithValue("h", Holder);
        cmd.Parameters.AddWithValue("d", _duration);
        var token = await cmd.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is long t ? t : 0;
        Interlocked.Exchange(ref _token, token);
        if (token != 0) StartRenewal();
        return token != 0;
    }

    /// <summary>Extends the lease; false (and the token is dropped) when it expired or another instance holds it.</summary>
    private async Task<bool> RenewAsync(CancellationToken ct)
    {
        var token = Token;
        if (token == 0) return false;
        await using var c = await _db.DataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand(
            "UPDATE trainer_lease SET expires_at = clock_timestamp() + @d WHERE id = 1 AND holder = @h AND token = @t AND expires_at > clock_timestamp();", c);
        cmd.Parameters.AddWithValue("d", _duration);
        cmd.Parameters.AddWithValue("h", Holder);
        cmd.Parameters.AddWithValue("t", token);
        if (await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false) == 1) return true;
        Interlocked.CompareExchange(ref _token, 0, token);
        return false;
    }

    private void StartRenewal()
    {
        lock (_sync)
        {
            if (_renewal is { IsCompleted: false }) return;
            _renewal = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested && Token != 0)
                {
                    try
                    {
                        await Task.Delay(_duration / 3, _stop.Token).ConfigureAwait(false);
                        await RenewAsync(_stop.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) { return; }
                    catch (Exception e) when (PostgreSqlDatabase.IsStoreError(e))
                    {
                        // The next renewal (or the fence) decides; a lease not renewed in time simply expires.
                        _logger.LogWarning(e, "Trainer lease renewal failed ({Database}).", _db.Description);
                    }
                }
            });
        }
    }

    /// <summary>
    /// Inside a transaction: locks the lease row and throws unless this instance holds it, with its token, unexpired.
    /// The row lock holds back any takeover until the transaction ends.
    /// </summary>
    /// <exception cref="VersionPromotionRefusedException">The lease is not held.</exception>
    public async Task FenceAsync(NpgsqlConnection c, NpgsqlTransaction tx, CancellationToken ct)
    {
        var token = Token;
        await using var cmd = new NpgsqlCommand("SELECT holder, token, expires_at > clock_timestamp() FROM trainer_lease WHERE id = 1 FOR UPDATE;", c, tx);
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        if (!await r.ReadAsync(ct).ConfigureAwait(false))
            throw new VersionPromotionRefusedException($"this instance ({Holder}) does not hold the trainer lease of {_db.Description} (nobody does)");
        var (holder, held, live) = (r.GetString(0), r.GetInt64(1), r.GetBoolean(2));
        if (token == 0 || holder != Holder || held != token || !live)
            throw new VersionPromotionRefusedException(
                $"this instance ({Holder}, token {token}) no longer holds the trainer lease of {_db.Description}: {(live ? "held" : "last held")} by {holder} with token {held}");
    }

    /// <summary>Gives the lease up at a graceful stop, so that another instance takes over at once.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _stop.CancelAsync().ConfigureAwait(false);
        var token = Interlocked.Exchange(ref _token, 0);
        if (_renewal is { } r) await r.ConfigureAwait(false);
        if (token == 0)
        {
            _stop.Dispose();
            return;
        }
        try
        {
            await using var c = await _db.DataSource.OpenConnectionAsync().ConfigureAwait(false);
            await using var cmd = new NpgsqlCommand("UPDATE trainer_lease SET expires_at = clock_timestamp() WHERE id = 1 AND holder = @h AND token = @t;", c);
            cmd.Parameters.AddWithValue("h", Holder);
            cmd.Parameters.AddWithValue("t", token);
            await cmd.ExecuteNonQueryAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (PostgreSqlDatabase.IsStoreError(e))
        {
            _logger.LogWarning(e, "Releasing the trainer lease failed ({Database}); it expires on its own.", _db.Description);
        }
        _stop.Dispose();
    }
}
