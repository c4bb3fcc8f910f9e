using Npgsql;
using NpgsqlTypes;
using OnnxTune.Hosting.PostgreSql.Internal;

namespace OnnxTune.Hosting.PostgreSql;

/// <summary>
/// Version files in the database (<c>version_files</c>: one <c>bytea</c> row per file, all rows of a version
/// written in one transaction): no shared folder to set up. For models whose version (model, checkpoint and
/// metadata) fits <see cref="PostgreSqlFineTuningOptions.MaxBlobBytes"/>.
/// </summary>
internal sealed class PostgreSqlBlobVersionFileStore(PostgreSqlDatabase db, long maxBytes) : IVersionFileStore
{
    public async Task UploadAsync(int version, string uid, string sourceFolder, CancellationToken cancellationToken = default)
    {
        var files = VersionFiles.List(sourceFolder);
        var total = files.Sum(f => new FileInfo(VersionFiles.Resolve(sourceFolder, f)).Length);
        if (total > maxBytes)
            throw new OnnxTuneException(
                $"Version {version} has {total} bytes of files, more than PostgreSql:MaxBlobBytes ({maxBytes}) allows in the database; " +
                "raise it (at most 1 GiB) or set PostgreSql:VersionFiles to SharedFolder.");
        await using var c = await db.DataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await c.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        foreach (var relative in files)
        {
            await using var cmd = new NpgsqlCommand("INSERT INTO version_files (version, uid, path, content) VALUES (@v, @u, @p, @c) ON CONFLICT DO NOTHING;", c, tx);
            cmd.Parameters.AddWithValue("v", version);
            cmd.Parameters.AddWithValue("u", uid);
            cmd.Parameters.AddWithValue("p", relative);
            cmd.Parameters.Add(new NpgsqlParameter("c", NpgsqlDbType.Bytea)
            {
                Value = await File.ReadAllBytesAsync(VersionFiles.Resolve(sourceFolder, relative), cancellationToken).ConfigureAwait(false),
            });
            await cmd.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task DownloadAsync(int version, string uid, string destinationFolder, CancellationToken cancellationToken = default)
    {
        await using var c = await db.DataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand("SELECT path, content FROM version_files WHERE version = @v AND uid = @u ORDER BY path;", c);
        cmd.Parameters.AddWithValue("v", version);
        cmd.Parameters.AddWithValue("u", uid);
        await using var r = await cmd.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        var n = 0;
        while (await r.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            n++;
            await VersionFiles.WriteDurableAsync(VersionFiles.Resolve(destinationFolder, r.GetString(0)), (byte[])r[1], cancellationToken).ConfigureAwait(false);
        }
        if (n == 0) throw new OnnxTuneException($"Shared version {version} ({uid}) has no files in {db.Description}.");
    }

    public async Task DeleteAsync(int version, string uid, CancellationToken cancellationToken = default)
    {
        await using var c = await db.DataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand("DELETE FROM version_files WHERE version = @v AND uid = @u;", c);
        cmd.Parameters.AddWithValue("v", version);
        cmd.Parameters.AddWithValue("u", uid);
        await cmd.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }
}
