using Microsoft.Extensions.Logging;
using Npgsql;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.PostgreSql.Internal;

namespace OnnxTune.Hosting.PostgreSql.Versions;

/// <summary>
/// The shared version registry: <c>versions</c> (number, unique id, who added it under which lease token, a
/// retirement), <c>promotions</c> (one row per promoted version: its primary key makes a second promotion of a
/// number impossible), <c>serving</c> (the one pointer every instance follows) and the files in an
/// <see cref="IVersionFileStore"/>. A version's files are stored before its row commits, and the pointer moves in
/// one transaction that also sends <c>NOTIFY onnxtune_versions</c>, so every instance sees a promotion or rollback
/// completely or not at all.
/// </summary>
internal sealed class PostgreSqlVersionRegistry(PostgreSqlDatabase db, IVersionFileStore files, PostgreSqlTrainerLease lease, ILogger logger)
    : ISharedVersionRegistry
{
    private int _keep = 5;

    public int? Synchronize(ModelVersionStore local)
    {
        _keep = local.KeepVersions;
        int? serving;
        var rows = new List<(int Version, string Uid, string? Retired, bool Promoted)>();
        using (var c = db.DataSource.OpenConnection())
        {
            using var tx = c.BeginTransaction(System.Data.IsolationLevel.RepeatableRead);
            using (var cmd = new NpgsqlCommand("SELECT version FROM serving WHERE id = 1;", c, tx))
                serving = cmd.ExecuteScalar() is int s ? s : null;
            using (var cmd = new NpgsqlCommand(
                "SELECT v.version, v.uid, v.retired_reason, EXISTS (SELECT 1 FROM promotions p WHERE p.version = v.version) FROM versions v ORDER BY v.version;", c, tx))
            using (var r = cmd.ExecuteReader())
                while (r.Read()) rows.Add((r.GetInt32(0), r.GetString(1), r.IsDBNull(2) ? null : r.GetString(2), r.GetBoolean(3)));
            tx.Commit();
        }
        var kept = rows.Where(r => r.Retired is null && (r.Promoted || r.Version == serving)).OrderByDescending(r => r.Version)
            .Where((r, i) => i < local.KeepVersions || r.Version == serving).ToList();
        foreach (var row in kept)
        {
            if (local.ReadSharedId(row.Version) == row.Uid) continue;
            try
            {
                local.ImportVersion(row.Version, row.Uid, dir => files.DownloadAsync(row.Version, row.Uid, dir).GetAwaiter().GetResult());
            }
            catch (Exception e) when (e is OnnxTuneException or IOException or UnauthorizedAccessException || PostgreSqlDatabase.IsStoreError(e))
            {
                // The serving fallback covers a version that cannot be fetched; the next synchronisation retries.
                logger.LogWarning(e, "Shared version {Version} could not be copied into the local replica '{Root}'.", row.Version, local.Root);
            }
        }
        foreach (var row in rows.Where(r => r.Retired is not null)) local.MarkRetiredLocal(row.Version, row.Retired!);
        return serving;
    }

    public int? ReadCurrent()
    {
        using var c = db.DataSource.OpenConnection();
        using var cmd = new NpgsqlCommand("SELECT version FROM serving WHERE id = 1;", c);
        return cmd.ExecuteScalar() is int s ? s : null;
    }

    public int NextVersion(int localNext)
    {
        using var c = db.DataSource.OpenConnection();
        using var cmd = new NpgsqlCommand("SELECT GREATEST((SELECT COALESCE(MAX(version), 0) FROM versions), (SELECT COALESCE(MAX(version), 0) FROM promotions)) + 1;", c);
        return Math.Max(localNext, (int)cmd.ExecuteScalar()!);
    }

    public string Publish(ModelVersionInfo version)
    {
        var uid = Guid.NewGuid().ToString("N");
        var bytes = Directory.EnumerateFiles(version.Directory, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        files.UploadAsync(version.Version, uid, version.Directory).GetAwaiter().GetResult();
        var abandoned = new List<(int Version, string Uid)>();
        try
        {
            using var c = db.DataSource.OpenConnection();
            using var tx = c.BeginTransaction();
            lease.FenceAsync(c, tx, CancellationToken.None).GetAwaiter().GetResult();
            // Versions a dead trainer added but never promoted: only the lease holder gets here, so none is in flight.
            using (var cmd = new NpgsqlCommand(
                "DELETE FROM versions WHERE version NOT IN (SELECT version FROM promotions) AND version NOT IN (SELECT version FROM serving) RETURNING version, uid;", c, tx))
            using (var r = cmd.ExecuteReader())
                while (r.Read()) abandoned.Add((r.GetInt32(0), r.GetString(1)));
            using (var cmd = new NpgsqlCommand(
                "INSERT INTO versions (version, uid, holder, token, bytes) VALUES (@v, @u, @h, @t, @b) ON CONFLICT (version) DO NOTHING;", c, tx))
            {
                cmd.Parameters.AddWithValue("v", version.Version);
                cmd.Parameters.AddWithValue("u", uid);
                cmd.Parameters.AddWithValue("h", lease.Holder);
                cmd.Parameters.AddWithValue("t", lease.Token);
                cmd.Parameters.AddWithValue("b", bytes);
                if (cmd.ExecuteNonQuery() != 1)
                    throw new VersionPromotionRefusedException($"version {version.Version} already exists in {db.Description}");
            }
            tx.Commit();
        }
        catch
        {
            TryDeleteFiles(version.Version, uid);
            throw;
        }
        foreach (var (v, u) in abandoned) TryDeleteFiles(v, u);
        return uid;
    }

    public void SetCurrent(int version, int? expected, bool promotion)
    {
        using var c = db.DataSource.OpenConnection();
        using var tx = c.BeginTransaction();
        if (promotion) lease.FenceAsync(c, tx, CancellationToken.None).GetAwaiter().GetResult();
        int? current;
        using (var cmd = new NpgsqlCommand("SELECT version FROM serving WHERE id = 1 FOR UPDATE;", c, tx))
            current = cmd.ExecuteScalar() is int s ? s : null;
        if (promotion && (current ?? 0) != (expected ?? 0))
            throw new VersionPromotionRefusedException(
                $"the shared pointer of {db.Description} moved to {Show(current)} while this candidate was gated against {Show(expected)}");
        if (version > 0)
        {
            using var cmd = new NpgsqlCommand("SELECT retired_reason FROM versions WHERE version = @v;", c, tx);
            cmd.Parameters.AddWithValue("v", version);
            var retired = cmd.ExecuteScalar();
            if (retired is null)
                throw promotion ? new VersionPromotionRefusedException($"version {version} is not in {db.Description}")
                    : new ModelVersionNotFoundException($"Model version {version} is not in the shared registry {db.Description}.");
            if (retired is string reason)
                throw new ModelVersionNotFoundException($"Model version {version} is retired in {db.Description}: {reason}");
        }
        if (promotion)
        {
            using var cmd = new NpgsqlCommand("INSERT INTO promotions (version, holder, token) VALUES (@v, @h, @t) ON CONFLICT (version) DO NOTHING;", c, tx);
            cmd.Parameters.AddWithValue("v", version);
            cmd.Parameters.AddWithValue("h", lease.Holder);
            cmd.Parameters.AddWithValue("t", lease.Token);
            if (cmd.ExecuteNonQuery() != 1)
                throw new VersionPromotionRefusedException($"version {version} was already promoted in {db.Description}");
        }
        using (var cmd = new NpgsqlCommand("""
            INSERT INTO serving (id, version, changed_at, changed_by) VALUES (1, @v, clock_timestamp(), @h)
            ON CONFLICT (id) DO UPDATE SET version = excluded.version, changed_at = excluded.changed_at, changed_by = excluded.changed_by;
            SELECT pg_notify(@ch, @s);
            """, c, tx))
        {
            cmd.Parameters.AddWithValue("v", version);
            cmd.Parameters.AddWithValue("h", lease.Holder);
            cmd.Parameters.AddWithValue("ch", PostgreSqlDatabase.VersionsChannel);
            cmd.Parameters.AddWithValue("s", db.Schema);
            cmd.ExecuteNonQuery();
        }
        tx.Commit();
    }

    public void Retire(int version, string reason)
    {
        using var c = db.DataSource.OpenConnection();
        using var cmd = new NpgsqlCommand("UPDATE versions SET retired_reason = @r WHERE version = @v; SELECT pg_notify(@ch, @s);", c);
        cmd.Parameters.AddWithValue("v", version);
        cmd.Parameters.AddWithValue("r", reason);
        cmd.Parameters.AddWithValue("ch", PostgreSqlDatabase.VersionsChannel);
        cmd.Parameters.AddWithValue("s", db.Schema);
        cmd.ExecuteNonQuery();
    }

    public void Discard(int version) => Delete(
        "DELETE FROM versions WHERE version = @v AND holder = @h AND version NOT IN (SELECT version FROM promotions) AND version NOT IN (SELECT version FROM serving) RETURNING version, uid;",
        version);

    public void Pruned(int version) => Delete("""
        DELETE FROM versions WHERE version = @v AND version NOT IN (SELECT version FROM serving)
            AND version NOT IN (SELECT version FROM versions WHERE retired_reason IS NULL AND version IN (SELECT version FROM promotions) ORDER BY version DESC LIMIT @k)
        RETURNING version, uid;
        """, version);

    private void Delete(string sql, int version)
    {
        var gone = new List<(int, string)>();
        using (var c = db.DataSource.OpenConnection())
        using (var cmd = new NpgsqlCommand(sql, c))
        {
            cmd.Parameters.AddWithValue("v", version);
            cmd.Parameters.AddWithValue("h", lease.Holder);
            cmd.Parameters.AddWithValue("k", _keep);
            using var r = cmd.ExecuteReader();
            while (r.Read()) gone.Add((r.GetInt32(0), r.GetString(1)));
        }
        foreach (var (v, u) in gone) TryDeleteFiles(v, u);
    }

    private void TryDeleteFiles(int version, string uid)
    {
        try { files.DeleteAsync(version, uid).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException || PostgreSqlDatabase.IsStoreError(e))
        {
            logger.LogWarning(e, "The files of shared version {Version} ({Uid}) could not be deleted.", version, uid);
        }
    }

    private static string Show(int? version) => version is > 0 ? $"version {version}" : "the base model";
}
