using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace OnnxTune.Hosting.Tests.Hardening;

/// <summary>The feedback store under a full disk, a read-only or vanished folder, a second holder and damaged rows.</summary>
public sealed class StoreFaultTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static FeedbackRecord Record(string id, string? user = null, int floats = 4) => new()
    {
        Id = id,
        CreatedAt = DateTimeOffset.UnixEpoch,
        Tensors = new Dictionary<string, TensorData> { ["x"] = TensorData.Float(new float[floats], 1, floats) },
        LabelIndex = 1,
        UserId = user,
    };

    private static async Task<HealthReport> HealthAsync(Harness h) =>
        await h.Host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

    [Fact]
    public async Task A_full_database_gives_a_typed_error_from_WriteAsync_and_unhealthy_until_writes_succeed_again()
    {
        await using var h = await Harness.StartAsync(_dir, new ScriptedRound());
        await h.WriteFeedbackAsync(3, label: 1, seed: 1);
        var store = (SqliteFeedbackStore)h.Store;
        store.SetMaxPageCount(1); // below the current size: SQLite refuses to grow, as on a full disk
        var big = new float[4];
        var e = await Assert.ThrowsAsync<FeedbackStoreException>(async () =>
        {
            for (var i = 0; i < 10_000; i++)
                await h.Writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TensorData.Float(big, 1, 4)), 1) with { Metadata = new Dictionary<string, string> { ["pad"] = new string('p', 2000) } });
        });
        Assert.Equal(FeedbackStoreErrorKind.Full, e.Kind);
        Assert.Equal("append", e.Operation);
        Assert.IsType<Microsoft.Data.Sqlite.SqliteException>(e.InnerException);
        var health = await HealthAsync(h);
        Assert.Equal(HealthStatus.Unhealthy, health.Status);
        Assert.Equal("Full", health.Entries["onnxtune"].Data["store_error"]);
        Assert.Equal(0, h.PredictedClass()); // still serving
        store.SetMaxPageCount(1_000_000);
        await h.WriteFeedbackAsync(1, label: 1, seed: 2);
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(h)).Status);
    }

    [Fact]
    public async Task A_full_file_system_gives_a_typed_error_when_a_tmpfs_can_be_mounted()
    {
        var mount = Directory.CreateDirectory(_dir.Sub("tmpfs")).FullName;
        if (!Mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", mount))
        {
            // Only root can mount; for others the page-limit test above covers SQLITE_FULL.
            Assert.NotEqual("root", Environment.UserName);
            return;
        }
        try
        {
            using var store = new SqliteFeedbackStore(Path.Combine(mount, "fb.db"));
            var e = await Assert.ThrowsAsync<FeedbackStoreException>(async () =>
            {
                for (var i = 0; i < 100_000; i++) await store.AppendAsync(Record($"r{i}", floats: 256));
            });
            Assert.Equal(FeedbackStoreErrorKind.Full, e.Kind);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Umount(mount);
        }
    }

    [Fact]
    public async Task A_read_only_store_folder_is_refused_at_open_with_a_typed_error()
    {
        var folder = Directory.CreateDirectory(_dir.Sub("ro")).FullName;
        var path = Path.Combine(folder, "fb.db");
        using (var store = new SqliteFeedbackStore(path))
        {
            await store.AppendAsync(Record("a"));
            // EXCLUSIVE locking mode keeps the WAL index in heap memory: no -shm file is mapped, so nothing can SIGBUS.
            Assert.True(File.Exists(path + "-wal"));
            Assert.False(File.Exists(path + "-shm"));
        }
        using (MakeReadOnly(folder))
        {
            Assert.Equal(FeedbackStoreErrorKind.ReadOnly, Assert.Throws<FeedbackStoreException>(() => new SqliteFeedbackStore(path)).Kind);
            Assert.Equal(FeedbackStoreErrorKind.ReadOnly, Assert.Throws<FeedbackStoreException>(() => new SqliteFeedbackStore(Path.Combine(folder, "new.db"))).Kind);
        }
        using var again = new SqliteFeedbackStore(path);
        Assert.Equal(["a"], (await again.GetTrainingSinceAsync(0, 10)).Select(r => r.Id));
    }

    [Fact]
    public async Task A_database_that_turns_unwritable_while_open_gives_typed_errors_from_WriteAsync_and_unhealthy()
    {
        // An existing file descriptor keeps writing through a read-only remount; an immutable file refuses it (root only).
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            Assert.NotEqual("root", Environment.UserName);
            return;
        }
        await using var h = await Harness.StartAsync(_dir, new ScriptedRound());
        await h.WriteFeedbackAsync(2, label: 1, seed: 3);
        var db = ((SqliteFeedbackStore)h.Store).Path;
        var files = new[] { db, db + "-wal" }.Where(File.Exists).ToArray();
        foreach (var f in files) Assert.True(Run("chattr", "+i", f), $"chattr +i {f}");
        try
        {
            var e = await Assert.ThrowsAsync<FeedbackStoreException>(() => h.WriteFeedbackAsync(1, label: 1, seed: 4));
            Assert.Equal(FeedbackStoreErrorKind.ReadOnly, e.Kind);
            Assert.Equal("append", e.Operation);
            var health = await HealthAsync(h);
            Assert.Equal(HealthStatus.Unhealthy, health.Status);
            Assert.Equal("ReadOnly", health.Entries["onnxtune"].Data["store_error"]);
            Assert.Equal(0, h.PredictedClass()); // serving goes on
        }
        finally
        {
            foreach (var f in files) Run("chattr", "-i", f);
        }
        await h.WriteFeedbackAsync(1, label: 1, seed: 5);
        Assert.Equal(HealthStatus.Healthy, (await HealthAsync(h)).Status);
        Assert.Equal(3, (await h.Store.GetTrainingSinceAsync(0, 100)).Count + (await h.Store.GetHeldOutAsync(100)).Count);
    }

    [Fact]
    public async Task An_unwritable_shm_file_left_by_another_sqlite_user_is_never_mapped()
    {
        // The SIGBUS of the issue: SQLite maps <db>-shm in shared-memory WAL mode; an unwritable or truncated one kills the
        // process on first access. The store runs in EXCLUSIVE locking mode, which keeps the WAL index in heap memory.
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            Assert.NotEqual("root", Environment.UserName);
            return;
        }
        var path = _dir.Sub("shm.db");
        using (var store = new SqliteFeedbackStore(path)) await store.AppendAsync(Record("a"));
        File.WriteAllBytes(path + "-shm", []);
        Assert.True(Run("chattr", "+i", path + "-shm"));
        try
        {
            using var store = new SqliteFeedbackStore(path);
            Assert.Equal(2, await store.AppendAsync(Record("b")));
            Assert.Equal(["a", "b"], (await store.GetTrainingSinceAsync(0, 10)).Select(r => r.Id));
            Assert.Equal(0, new FileInfo(path + "-shm").Length);
        }
        finally
        {
            Run("chattr", "-i", path + "-shm");
        }
    }

    [Fact]
    public async Task A_vanished_store_folder_gives_a_typed_error_instead_of_writing_into_a_deleted_file()
    {
        var folder = Directory.CreateDirectory(_dir.Sub("gone")).FullName;
        using var store = new SqliteFeedbackStore(Path.Combine(folder, "fb.db"));
        await store.AppendAsync(Record("a"));
        Directory.Delete(folder, recursive: true);
        var e = await Assert.ThrowsAsync<FeedbackStoreException>(() => store.AppendAsync(Record("b")).AsTask());
        Assert.Equal(FeedbackStoreErrorKind.IO, e.Kind);
        Assert.Contains("vanished", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_second_holder_of_the_database_gets_a_typed_error_naming_the_holder()
    {
        var path = _dir.Sub("held.db");
        using var first = new SqliteFeedbackStore(path);
        var e = Assert.Throws<StoreLockedException>(() => new SqliteFeedbackStore(path));
        Assert.Equal(Environment.ProcessId, e.HolderProcessId);
        Assert.Equal(Environment.MachineName, e.HolderHost);
        Assert.NotNull(e.HolderStartedAt);
        Assert.Contains($"process {Environment.ProcessId}", e.Message, StringComparison.Ordinal);
        first.Dispose();
        using var second = new SqliteFeedbackStore(path); // released on dispose
    }

    [Fact]
    public async Task A_damaged_row_is_quarantined_on_read_instead_of_failing_every_read()
    {
        var path = _dir.Sub("dmg.db");
        using (var store = new SqliteFeedbackStore(path))
        {
            await store.AppendAsync(Record("a", "u1"));
            await store.AppendAsync(Record("b", "u1"));
            await store.AppendAsync(Record("c", "u2"));
        }
        using (var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "UPDATE feedback SET tensors = '{\"x\": {\"dtype\": 3' WHERE id = 'b';";
            Assert.Equal(1, cmd.ExecuteNonQuery());
        }
        using (var store = new SqliteFeedbackStore(path))
        {
            Assert.Equal(["a", "c"], (await store.GetTrainingSinceAsync(0, 10)).Select(r => r.Id));
            var q = Assert.Single(await store.ListQuarantinedAsync());
            Assert.Equal(("b", 2L, "u1"), (q.Id, q.Sequence, q.UserId));
            Assert.Contains("cannot be read", q.Reason, StringComparison.Ordinal);
            Assert.Equal([2L], await store.GetMissingAsync([1, 2, 3]));
            // Deleting the user also deletes their quarantined records.
            Assert.Equal(2, await store.DeleteUserAsync("u1"));
            Assert.Empty(await store.ListQuarantinedAsync());
        }
    }

    [Fact]
    public async Task Retention_deletes_only_records_at_or_below_the_given_sequence()
    {
        using var store = new SqliteFeedbackStore(_dir.Sub("ret.db"));
        for (var i = 0; i < 5; i++) await store.AppendAsync(Record($"r{i}"));
        Assert.Equal(3, await store.DeleteOlderThanAsync(DateTimeOffset.MaxValue.AddDays(-1), atOrBelowSequence: 3));
        Assert.Equal(["r3", "r4"], (await store.GetTrainingSinceAsync(0, 10)).Select(r => r.Id));
    }

    [Fact]
    public void User_hashes_are_keyed_per_store_and_stable_across_reopening()
    {
        string h1;
        using (var a = new SqliteFeedbackStore(_dir.Sub("h1.db"))) h1 = a.HashUserId("alice");
        using var again = new SqliteFeedbackStore(_dir.Sub("h1.db"));
        using var other = new SqliteFeedbackStore(_dir.Sub("h2.db"));
        Assert.Equal(h1, again.HashUserId("alice"));
        Assert.NotEqual(h1, other.HashUserId("alice"));
        Assert.NotEqual(h1, again.HashUserId("bob"));
        Assert.Equal(64, h1.Length);
    }

    /// <summary>Read-only for root too: a read-only bind mount over the folder; otherwise (not root) chmod 555.</summary>
    private static IDisposable MakeReadOnly(string folder)
    {
        if (Mount("--bind", folder, folder))
        {
            if (Mount("-o", "remount,ro,bind", folder, folder)) return new Undo(() => Umount(folder));
            Umount(folder);
        }
        Assert.NotEqual("root", Environment.UserName); // as root, a chmod would not stop writes: the mount must have worked
        Assert.False(OperatingSystem.IsWindows(), "the read-only store test needs a Unix file system");
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException();
        File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        return new Undo(() =>
        {
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        });
    }

    private static bool Mount(params string[] args) => Run("mount", args);

    private static void Umount(string folder) => Run("umount", folder);

    private static bool Run(string exe, params string[] args)
    {
        try
        {
            var info = new ProcessStartInfo(exe) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in args) info.ArgumentList.Add(a);
            using var p = Process.Start(info)!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    private sealed class Undo(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }
}
