using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.PostgreSql.Internal;
using OnnxTune.Hosting.PostgreSql.Versions;
using OnnxTune.Hosting.Tests;

namespace OnnxTune.Hosting.PostgreSql.Tests;

/// <summary>The trainer lease's fencing and the shared version registry, on the private server (two "instances" in one process).</summary>
[Collection(PostgreSqlCollection.Name)]
public sealed class SharedRegistryTests(PostgreSqlServer server) : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _schema = "t_" + Guid.NewGuid().ToString("N")[..12];
    private readonly List<IDisposable> _disposables = [];

    public void Dispose()
    {
        foreach (var d in _disposables) d.Dispose();
        _dir.Dispose();
    }

    private PostgreSqlDatabase Database()
    {
        PostgreSqlServer.SkipIfUnavailable();
        var db = new PostgreSqlDatabase(server.ConnectionString, _schema);
        db.EnsureCreated();
        _disposables.Add(db);
        return db;
    }

    private async Task ExpireLeaseAsync()
    {
        await using var c = new NpgsqlConnection(server.ConnectionString);
        await c.OpenAsync();
        // What a holder that died (or paused) leaves once its lease ran out.
        await using var cmd = new NpgsqlCommand($"UPDATE {_schema}.trainer_lease SET expires_at = clock_timestamp() - interval '1 second';", c);
        await cmd.ExecuteNonQueryAsync();
    }

    private async Task<T> ScalarAsync<T>(string sql)
    {
        await using var c = new NpgsqlConnection(server.ConnectionString);
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql.Replace("@schema", _schema, StringComparison.Ordinal), c);
        return (T)(await cmd.ExecuteScalarAsync())!;
    }

    private static async Task FenceAsync(PostgreSqlDatabase db, PostgreSqlTrainerLease lease)
    {
        await using var c = await db.DataSource.OpenConnectionAsync();
        await using var tx = await c.BeginTransactionAsync();
        await lease.FenceAsync(c, tx, default);
    }

    [SkippableFact]
    public async Task One_holder_at_a_time_and_a_takeover_after_expiry_bumps_the_token_and_fences_the_old_holder()
    {
        var db = Database();
        await using var a = new PostgreSqlTrainerLease(db, TimeSpan.FromSeconds(30), NullLogger.Instance);
        await using var b = new PostgreSqlTrainerLease(db, TimeSpan.FromSeconds(30), NullLogger.Instance);
        Assert.True(await a.TryHoldAsync(default));
        Assert.True(await a.TryHoldAsync(default));
        Assert.False(await b.TryHoldAsync(default));
        var first = a.Token;
        await FenceAsync(db, a);
        await Assert.ThrowsAsync<VersionPromotionRefusedException>(() => FenceAsync(db, b));

        await ExpireLeaseAsync();
        // The expired holder can neither renew nor pass the fence, even before anybody else took over.
        await Assert.ThrowsAsync<VersionPromotionRefusedException>(() => FenceAsync(db, a));
        Assert.True(await b.TryHoldAsync(default));
        Assert.Equal(first + 1, b.Token);
        Assert.False(await a.TryHoldAsync(default));
        Assert.Equal(0, a.Token);
        var refused = await Assert.ThrowsAsync<VersionPromotionRefusedException>(() => FenceAsync(db, a));
        Assert.Contains(b.Holder, refused.Message, StringComparison.Ordinal);
        await FenceAsync(db, b);

        // A graceful stop hands the lease over at once.
        await b.DisposeAsync();
        Assert.True(await a.TryHoldAsync(default));
        Assert.Equal(first + 2, a.Token);
    }

    [SkippableFact]
    public async Task A_promotion_is_fenced_by_the_lease_and_the_pointer_and_reaches_another_replica_once()
    {
        var db = Database();
        await using var leaseA = new PostgreSqlTrainerLease(db, TimeSpan.FromSeconds(30), NullLogger.Instance);
        await using var leaseB = new PostgreSqlTrainerLease(db, TimeSpan.FromSeconds(30), NullLogger.Instance);
        var files = new PostgreSqlBlobVersionFileStore(db, 1 << 20);
        var regA = new PostgreSqlVersionRegistry(db, files, leaseA, NullLogger.Instance);
        var regB = new PostgreSqlVersionRegistry(db, files, leaseB, NullLogger.Instance);
        using var a = new ModelVersionStore(_dir.Sub("a"), 3, regA);
        Assert.Null(a.ReadPointer());
        var decision = new GateDecision
        {
            ModelName = "",
            Round = 1,
            Promoted = true,
            DecidedAt = DateTimeOffset.UnixEpoch,
            Serving = new EvaluationResult(0.5, 10, null, 0, true),
            Candidate = new EvaluationResult(0.75, 10, null, 0, true),
            Checks = [GateCheckResult.Pass("held-out", "0.75 vs 0.5")],
        };
        var candidate = _dir.Sub("candidate.onnx");
        var (w, bias) = TestModels.Biased(1);
        TestModels.WriteLinear(candidate, w, bias);

        // Without the lease nobody may add a version.
        Assert.Throws<VersionPromotionRefusedException>(() => a.AddVersion(candidate, null, new { }, decision));
        Assert.Empty(Directory.EnumerateDirectories(a.Root, "v*"));
        Assert.True(await leaseA.TryHoldAsync(default));
        var v1 = a.AddVersion(candidate, null, new { }, decision);
        Assert.Equal(1, v1.Version);
        a.SetCurrent(1);
        Assert.Equal(1, await ScalarAsync<int>("SELECT version FROM @schema.serving"));

        // A second replica imports version 1 (same bytes) and points at it from the start.
        using var b = new ModelVersionStore(_dir.Sub("b"), 3, regB);
        Assert.Equal(1, b.ReadPointer());
        Assert.Equal(File.ReadAllBytes(v1.ModelPath), File.ReadAllBytes(b.GetCurrent()!.ModelPath));
        Assert.Equal(a.ReadSharedId(1), b.ReadSharedId(1));

        // A's next candidate: B takes the lease over (A's expired) before A promotes it; the promotion is refused.
        var v2 = a.AddVersion(candidate, null, new { }, decision);
        await ExpireLeaseAsync();
        Assert.True(await leaseB.TryHoldAsync(default));
        Assert.Throws<VersionPromotionRefusedException>(() => a.SetCurrent(v2.Version));
        Assert.Equal(1, await ScalarAsync<int>("SELECT version FROM @schema.serving"));
        a.Discard(v2);

        // B's candidate was gated against version 1, but a rollback elsewhere moved the pointer to the base model: refused too.
        // Number 2 was never promoted and was discarded: it is free again (the shared id tells the two apart).
        var v3 = b.AddVersion(candidate, null, new { }, decision);
        Assert.Equal(2, v3.Version);
        Assert.NotEqual(a.ReadSharedId(2), b.ReadSharedId(2));
        regA.SetCurrent(0, null, promotion: false);
        var moved = Assert.Throws<VersionPromotionRefusedException>(() => b.SetCurrent(v3.Version));
        Assert.Contains("moved", moved.Message, StringComparison.Ordinal);
        // A number is promoted at most once, even by the lease holder.
        Assert.Throws<VersionPromotionRefusedException>(() => regB.SetCurrent(1, 0, promotion: true));
        Assert.Equal(1L, await ScalarAsync<long>("SELECT COUNT(*) FROM @schema.promotions"));
        // The registry kept only what was promoted or serves.
        Assert.Equal(0, regA.Synchronize(a));
    }

    [SkippableFact]
    public async Task Version_files_round_trip_through_a_shared_folder_and_the_database_with_a_size_limit()
    {
        var db = Database();
        var source = Directory.CreateDirectory(_dir.Sub("v")).FullName;
        File.WriteAllBytes(Path.Combine(source, "model.onnx"), [1, 2, 3]);
        Directory.CreateDirectory(Path.Combine(source, "checkpoint"));
        File.WriteAllText(Path.Combine(source, "checkpoint", "checkpoint.json"), "{}");
        File.WriteAllText(Path.Combine(source, ModelVersionStore.PromotedMarkerFileName), "");
        foreach (IVersionFileStore files in new IVersionFileStore[] { new SharedFolderVersionFileStore(_dir.Sub("shared")), new PostgreSqlBlobVersionFileStore(db, 1 << 20) })
        {
            await files.UploadAsync(4, "u1", source);
            var target = Directory.CreateDirectory(_dir.Sub("t-" + files.GetType().Name)).FullName;
            await files.DownloadAsync(4, "u1", target);
            Assert.Equal([1, 2, 3], File.ReadAllBytes(Path.Combine(target, "model.onnx")));
            Assert.Equal("{}", File.ReadAllText(Path.Combine(target, "checkpoint", "checkpoint.json")));
            Assert.False(File.Exists(Path.Combine(target, ModelVersionStore.PromotedMarkerFileName)), "a replica's own marker travelled");
            await files.DeleteAsync(4, "u1");
            await Assert.ThrowsAsync<OnnxTuneException>(() => files.DownloadAsync(4, "u1", Directory.CreateDirectory(_dir.Sub("empty-" + files.GetType().Name)).FullName));
        }
        var tooLarge = await Assert.ThrowsAsync<OnnxTuneException>(() => new PostgreSqlBlobVersionFileStore(db, 4).UploadAsync(5, "u2", source));
        Assert.Contains("PostgreSql:MaxBlobBytes", tooLarge.Message, StringComparison.Ordinal);
    }
}
