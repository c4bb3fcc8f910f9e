using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.PostgreSql.Internal;

namespace OnnxTune.Hosting.PostgreSql.Versions;

/// <summary>
/// Keeps an instance on the fleet's serving version: <c>LISTEN onnxtune_versions</c> on a connection of its own
/// wakes it at once after a promotion, rollback or retirement anywhere; a poll every
/// <see cref="PostgreSqlFineTuningOptions.PollInterval"/> covers lost notifications and reconnects. Each wake-up
/// copies new versions into the local replica and swaps to the shared pointer through the same load and swap as a
/// local promotion.
/// </summary>
internal sealed class PostgreSqlVersionFollower(FineTunedModel model, PostgreSqlDatabase db, ISharedVersionRegistry registry, TimeSpan pollInterval, ILogger logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var c = new NpgsqlConnection(db.ListenConnectionString);
                await c.OpenAsync(stoppingToken).ConfigureAwait(false);
                c.Notification += (_, e) => { if (e.Payload == db.Schema) logger.LogDebug("Model '{Model}': version notification.", model.Name); };
                await using (var cmd = new NpgsqlCommand($"LISTEN {PostgreSqlDatabase.VersionsChannel};", c))
                    await cmd.ExecuteNonQueryAsync(stoppingToken).ConfigureAwait(false);
                while (!stoppingToken.IsCancellationRequested)
                {
                    await FollowOnceAsync(stoppingToken).ConfigureAwait(false);
                    // True on a notification (for any model: a spurious wake-up only costs one read), false after the poll interval.
                    await c.WaitAsync(pollInterval, stoppingToken).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (PostgreSqlDatabase.IsStoreError(e))
            {
                logger.LogWarning(e, "Model '{Model}': listening for version changes on {Database} failed; retrying in {Seconds} s.", model.Name, db.Description, pollInterval.TotalSeconds);
                try { await Task.Delay(pollInterval, stoppingToken).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
            }
        }
    }

    /// <summary>One synchronisation: import, swap to the shared pointer, prune the replica. Failures are logged; the next wake-up retries.</summary>
    internal async Task FollowOnceAsync(CancellationToken ct)
    {
        try
        {
            // Imports outside the version lock (downloads may take a while), then the pointer is read again under it.
            await Task.Run(() => registry.Synchronize(model.Versions), ct).ConfigureAwait(false);
            await model.FollowAsync(registry.ReadCurrent, ct).ConfigureAwait(false);
            await model.Versions.LockAsync(ct).ConfigureAwait(false);
            try { model.Versions.Prune(); }
            finally { model.Versions.Unlock(); }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            logger.LogWarning(e, "Model '{Model}': following the shared serving version failed.", model.Name);
        }
    }
}
