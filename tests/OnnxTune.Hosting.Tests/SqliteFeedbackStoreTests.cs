using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests;

public sealed class SqliteFeedbackStoreTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static FeedbackRecord Record(string id, string? user, bool heldOut = false, float x0 = 0.5f, long label = 1) => new()
    {
        Id = id,
        CreatedAt = new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero),
        Tensors = new Dictionary<string, TensorData> { ["x"] = TensorData.Float([x0, 0.25f, -1e-7f, 3.4e38f], 1, 4) },
        LabelIndex = label,
        LabelName = "c" + label,
        Weight = 0.75f,
        UserId = user,
        Metadata = new Dictionary<string, string> { ["source"] = "ui" },
        HeldOut = heldOut,
    };

    [Fact]
    public async Task Records_survive_reopening_the_database_unchanged()
    {
        var path = _dir.Sub("fb.db");
        using (var store = new SqliteFeedbackStore(path))
        {
            Assert.Equal(1, await store.AppendAsync(Record("a", "u1")));
            Assert.Equal(2, await store.AppendAsync(Record("b", null, heldOut: true)));
            await store.AppendAsync(new FeedbackRecord { Id = "t", Text = "play some jazz", LabelIndex = 2 });
            await store.SetStateAsync("k", "v1");
        }
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        using (var store = new SqliteFeedbackStore(path))
        {
            Assert.Equal(3, await store.GetLatestSequenceAsync());
            Assert.Equal("v1", await store.GetStateAsync("k"));
            var training = await store.GetTrainingSinceAsync(0, 3);
            Assert.Equal(["a", "t"], training.Select(r => r.Id));
            var a = training[0];
            Assert.Equal([0.5f, 0.25f, -1e-7f, 3.4e38f], a.Tensors!["x"].FloatData!);
            Assert.Equal([1L, 4L], a.Tensors["x"].Shape);
            Assert.Equal(1, a.LabelIndex);
            Assert.Equal("c1", a.LabelName);
            Assert.Equal(0.75f, a.Weight);
            Assert.Equal("u1", a.UserId);
            Assert.Equal("ui", a.Metadata!["source"]);
            Assert.Equal(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero), a.CreatedAt);
            Assert.Equal("play some jazz", training[1].Text);
            Assert.Equal(["b"], (await store.GetHeldOutAsync(3)).Select(r => r.Id));
        }
    }

    [Fact]
    public async Task Database_uses_wal_journal()
    {
        var path = _dir.Sub("wal.db");
        using (var store = new SqliteFeedbackStore(path))
            await store.AppendAsync(Record("a", null));
        // The store holds the file exclusively while open; read the journal mode after it closed.
        using var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA journal_mode;";
        Assert.Equal("wal", (string)cmd.ExecuteScalar()!);
    }

    [Fact]
    public async Task DeleteUser_removes_only_that_users_records_and_sequences_are_not_reused()
    {
        using var store = new SqliteFeedbackStore(_dir.Sub("del.db"));
        for (var i = 0; i < 6; i++) await store.AppendAsync(Record($"r{i}", i % 2 == 0 ? "alice" : "bob", heldOut: i == 4));
        Assert.Equal(3, await store.DeleteUserAsync("alice"));
        Assert.Equal(0, await store.DeleteUserAsync("alice"));
        var left = await store.GetTrainingSinceAsync(0, long.MaxValue);
        Assert.All(left, r => Assert.Equal("bob", r.UserId));
        Assert.Empty(await store.GetHeldOutAsync(long.MaxValue));
        Assert.Equal(3, await store.CountTrainingSinceAsync(0));
        Assert.Equal(7, await store.AppendAsync(Record("new", "carol")));
        Assert.DoesNotContain(await store.GetReplaySampleAsync(long.MaxValue, 100, 1), r => r.UserId == "alice");
    }

    [Fact]
    public async Task Watermark_queries_and_replay_sample_are_deterministic()
    {
        using var store = new SqliteFeedbackStore(_dir.Sub("q.db"));
        for (var i = 0; i < 40; i++) await store.AppendAsync(Record($"r{i}", null, heldOut: i % 10 == 0));
        Assert.Equal(36, await store.CountTrainingSinceAsync(0));
        Assert.Equal(18, await store.CountTrainingSinceAsync(20));
        var since = await store.GetTrainingSinceAsync(20, 30);
        Assert.Equal(Enumerable.Range(21, 10).Where(s => (s - 1) % 10 != 0).Select(s => (long)s), since.Select(r => r.Sequence));

        var s1 = await store.GetReplaySampleAsync(30, 8, seed: 7);
        var s2 = await store.GetReplaySampleAsync(30, 8, seed: 7);
        var s3 = await store.GetReplaySampleAsync(30, 8, seed: 8);
        Assert.Equal(8, s1.Count);
        Assert.Equal(s1.Select(r => r.Sequence), s2.Select(r => r.Sequence));
        Assert.NotEqual(s1.Select(r => r.Sequence), s3.Select(r => r.Sequence));
        Assert.All(s1, r => { Assert.True(r.Sequence <= 30); Assert.False(r.HeldOut); });
        Assert.Equal(27, (await store.GetReplaySampleAsync(30, 1000, 1)).Count);
    }

    [Fact]
    public async Task DeleteOlderThan_applies_retention()
    {
        using var store = new SqliteFeedbackStore(_dir.Sub("ret.db"));
        var t0 = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        for (var i = 0; i < 5; i++) await store.AppendAsync(Record($"r{i}", null) with { CreatedAt = t0.AddDays(i) });
        Assert.Equal(2, await store.DeleteOlderThanAsync(t0.AddDays(2)));
        Assert.Equal(["r2", "r3", "r4"], (await store.GetTrainingSinceAsync(0, 100)).Select(r => r.Id));
    }

    [Fact]
    public void HeldOut_assignment_is_a_pure_function_of_the_key_and_secret_with_the_requested_share()
    {
        var ids = Enumerable.Range(0, 20000).Select(i => $"id-{i}").ToArray();
        byte[] secret = [.. Enumerable.Range(1, 32).Select(i => (byte)i)];
        var first = ids.Select(id => HeldOutAssignment.IsHeldOut(id, secret, 0.1)).ToArray();
        var again = ids.Select(id => HeldOutAssignment.IsHeldOut(id, secret, 0.1)).ToArray();
        Assert.Equal(first, again);
        var share = first.Count(b => b) / (double)ids.Length;
        Assert.InRange(share, 0.09, 0.11);
        Assert.DoesNotContain(ids, id => HeldOutAssignment.IsHeldOut(id, secret, 0));
        // A larger share only adds records: membership is monotonic in the share.
        Assert.All(ids.Where(id => HeldOutAssignment.IsHeldOut(id, secret, 0.1)), id => Assert.True(HeldOutAssignment.IsHeldOut(id, secret, 0.3)));
    }
}
