using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.Tests;

namespace OnnxTune.Hosting.PostgreSql.Tests;

/// <summary>
/// One test suite for every feedback store: each test runs against SQLite (<see cref="SqliteFeedbackStoreContractTests"/>)
/// and against the private PostgreSQL server (<see cref="PostgreSqlFeedbackStoreContractTests"/>).
/// </summary>
public abstract class FeedbackStoreContract : IDisposable
{
    private readonly List<IDisposable> _open = [];

    /// <summary>Opens the store under test (the same one on every call; a previous object may still be open only when <paramref name="closePrevious"/> is false).</summary>
    protected abstract IFeedbackStore OpenStore();

    /// <summary>Overwrites the stored tensors column of a record with text that is not valid JSON (the store is closed first and reopened after).</summary>
    protected abstract Task DamageTensorsAsync(long sequence);

    /// <summary>Selects the store under test on a hosted model (nothing for the SQLite default).</summary>
    protected abstract void UseStore(IOnDeviceFineTuningBuilder builder);

    /// <summary>The concrete store type a hosted model resolves.</summary>
    protected abstract Type StoreType { get; }

    protected IFeedbackStore Open()
    {
        var s = OpenStore();
        if (s is IDisposable d) _open.Add(d);
        return s;
    }

    protected void CloseAll()
    {
        foreach (var d in _open) d.Dispose();
        _open.Clear();
    }

    public virtual void Dispose()
    {
        CloseAll();
        GC.SuppressFinalize(this);
    }

    internal static FeedbackRecord Record(string id, string? user, bool heldOut = false, float x0 = 0.5f, long label = 1) => new()
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

    [SkippableFact]
    public async Task A_hosted_model_validates_feedback_and_splits_held_out_records_in_the_store()
    {
        Open();
        CloseAll();
        using var dir = new TempDir();
        TestModels.WriteArtifacts(dir.Sub("artifacts"));
        var builder = Host.CreateEmptyApplicationBuilder(new());
        UseStore(builder.Services.AddOnDeviceFineTuning(o =>
        {
            o.ArtifactsPath = dir.Sub("artifacts");
            o.ModelStorePath = dir.Sub("store");
            o.HeldOutShare = 0.5;
            o.CheckInterval = TimeSpan.FromHours(1);
        }));
        using var host = builder.Build();
        await host.StartAsync();
        var store = host.Services.GetRequiredService<IFeedbackStore>();
        Assert.IsType(StoreType, store);
        var writer = host.Services.GetRequiredService<IFeedbackWriter>();
        var bad = await Assert.ThrowsAsync<FeedbackValidationException>(async () =>
            await writer.WriteAsync(Feedback.ForTensors(new Dictionary<string, TensorData> { ["nope"] = TensorData.Float([1, 2, 3, 4], 1, 4) }, 1)));
        Assert.Equal(FeedbackErrorKind.UnknownInput, bad.Kind);
        await Assert.ThrowsAsync<FeedbackValidationException>(async () => await writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TestModels.X(new Random(1))), 7)));
        Assert.Equal(0, await store.GetLatestSequenceAsync());
        var rng = new Random(3);
        var receipts = new List<FeedbackReceipt>();
        for (var i = 0; i < 40; i++) receipts.Add(await writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TestModels.X(rng)), i % 3, "u" + (i % 4))));
        Assert.Equal(receipts.Where(r => r.HeldOut).Select(r => r.Sequence), (await store.GetHeldOutAsync(100)).Select(r => r.Sequence));
        Assert.Equal(receipts.Where(r => !r.HeldOut).Select(r => r.Sequence), (await store.GetTrainingSinceAsync(0, 100)).Select(r => r.Sequence));
        Assert.InRange(receipts.Count(r => r.HeldOut), 8, 32);
        await host.StopAsync();
    }

    [SkippableFact]
    public async Task Records_survive_reopening_the_store_unchanged()
    {
        var store = Open();
        Assert.Equal(1, await store.AppendAsync(Record("a", "u1")));
        Assert.Equal(2, await store.AppendAsync(Record("b", null, heldOut: true)));
        await store.AppendAsync(new FeedbackRecord { Id = "t", Text = "play some jazz", LabelIndex = 2 });
        await store.SetStateAsync("k", "v1");
        await store.SetStateAsync("k", "v2");
        CloseAll();
        store = Open();
        Assert.Equal(3, await store.GetLatestSequenceAsync());
        Assert.Equal("v2", await store.GetStateAsync("k"));
        Assert.Null(await store.GetStateAsync("missing"));
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
        Assert.False(a.HeldOut);
        Assert.Equal("play some jazz", training[1].Text);
        Assert.Null(training[1].Tensors);
        Assert.Null(training[1].Metadata);
        var heldOut = Assert.Single(await store.GetHeldOutAsync(3));
        Assert.Equal("b", heldOut.Id);
        Assert.True(heldOut.HeldOut);
    }

    [SkippableFact]
    public async Task A_duplicate_record_id_is_refused_and_takes_no_sequence_number()
    {
        var store = Open();
        await store.AppendAsync(Record("a", null));
        await Assert.ThrowsAnyAsync<Exception>(async () => await store.AppendAsync(Record("a", null)));
        Assert.Equal(1, await store.GetLatestSequenceAsync());
        Assert.Equal(2, await store.AppendAsync(Record("b", null)));
    }

    [SkippableFact]
    public async Task DeleteUser_removes_only_that_users_records_and_sequences_are_not_reused()
    {
        var store = Open();
        for (var i = 0; i < 6; i++) await store.AppendAsync(Record($"r{i}", i % 2 == 0 ? "alice" : "bob", heldOut: i == 4));
        Assert.True(await ((IFeedbackMaintenance)store).QuarantineAsync(1, "test"));
        // Two training records, one held-out record and one quarantined record of alice's.
        Assert.Equal(3, await store.DeleteUserAsync("alice"));
        Assert.Equal(0, await store.DeleteUserAsync("alice"));
        Assert.Empty(await ((IFeedbackMaintenance)store).ListQuarantinedAsync());
        var left = await store.GetTrainingSinceAsync(0, long.MaxValue);
        Assert.All(left, r => Assert.Equal("bob", r.UserId));
        Assert.Empty(await store.GetHeldOutAsync(long.MaxValue));
        Assert.Equal(3, await store.CountTrainingSinceAsync(0));
        Assert.Equal(7, await store.AppendAsync(Record("new", "carol")));
        Assert.DoesNotContain(await store.GetReplaySampleAsync(long.MaxValue, 100, 1), r => r.UserId == "alice");
    }

    [SkippableFact]
    public async Task Partitions_summarise_each_key_and_return_its_newest_records_in_sequence_order()
    {
        var store = Open();
        Assert.IsAssignableFrom<IPartitionedFeedbackStore>(store);
        var partitioned = (IPartitionedFeedbackStore)store;
        string?[] keys = ["tenant-b", null, "tenant-a", "tenant-b", "tenant-a", "tenant-b", "Tenant-a"];
        for (var i = 0; i < keys.Length; i++)
            await store.AppendAsync(Record($"r{i}", "u", heldOut: i == 5) with { PartitionKey = keys[i] });

        var all = await partitioned.GetPartitionsAsync(long.MaxValue);
        // Ordinal order (upper case first), records without a key in no partition.
        Assert.Equal(["Tenant-a", "tenant-a", "tenant-b"], all.Select(p => p.PartitionKey));
        Assert.Equal(new PartitionSummary("tenant-b", 2, 1, 6), all[2]);
        Assert.Equal(new PartitionSummary("tenant-a", 2, 0, 5), all[1]);
        var early = await partitioned.GetPartitionsAsync(4);
        Assert.Equal([new PartitionSummary("tenant-a", 1, 0, 3), new PartitionSummary("tenant-b", 2, 0, 4)], early);

        var newest = await partitioned.GetPartitionAsync("tenant-b", long.MaxValue, 2);
        Assert.Equal(["r3", "r5"], newest.Select(r => r.Id));
        Assert.True(newest[1].HeldOut);
        Assert.All(newest, r => Assert.Equal("tenant-b", r.PartitionKey));
        Assert.Equal(["r0", "r3"], (await partitioned.GetPartitionAsync("tenant-b", 5, 10)).Select(r => r.Id));
        Assert.Empty(await partitioned.GetPartitionAsync("nobody", long.MaxValue, 10));
        Assert.Empty(await partitioned.GetPartitionAsync("tenant-a", long.MaxValue, 0));
    }

    [SkippableFact]
    public async Task The_latest_sequence_is_the_highest_ever_assigned_even_after_deletions()
    {
        var store = Open();
        for (var i = 0; i < 3; i++) await store.AppendAsync(Record($"r{i}", i == 2 ? "gone" : null));
        await store.DeleteUserAsync("gone");
        Assert.Equal(3, await store.GetLatestSequenceAsync());
        CloseAll();
        Assert.Equal(3, await Open().GetLatestSequenceAsync());
    }

    [SkippableFact]
    public async Task Watermark_queries_and_replay_sample_are_deterministic()
    {
        var store = Open();
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
        Assert.Empty(await store.GetReplaySampleAsync(30, 0, 1));
    }

    [SkippableFact]
    public async Task Retention_deletes_old_records_and_the_watermark_bound_keeps_untrained_ones()
    {
        var store = Open();
        var t0 = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        for (var i = 0; i < 6; i++) await store.AppendAsync(Record($"r{i}", null) with { CreatedAt = t0.AddDays(i) });
        Assert.Equal(1, await store.DeleteOlderThanAsync(t0.AddDays(1)));
        // Records 2..5 (r1..r4) are old enough, but only 2 and 3 are at or below the watermark (3).
        Assert.Equal(2, await ((IFeedbackMaintenance)store).DeleteOlderThanAsync(t0.AddDays(5), 3));
        Assert.Equal(["r3", "r4", "r5"], (await store.GetTrainingSinceAsync(0, 100)).Select(r => r.Id));
    }

    [SkippableFact]
    public async Task Quarantine_moves_a_record_out_of_training_and_GetMissing_reports_it()
    {
        var store = Open();
        var m = (IFeedbackMaintenance)store;
        for (var i = 0; i < 4; i++) await store.AppendAsync(Record($"r{i}", "u"));
        Assert.True(await m.QuarantineAsync(2, "the engine could not use it"));
        Assert.False(await m.QuarantineAsync(2, "again"));
        Assert.False(await m.QuarantineAsync(99, "no such record"));
        Assert.Equal([1L, 3, 4], (await store.GetTrainingSinceAsync(0, 10)).Select(r => r.Sequence));
        var q = Assert.Single(await m.ListQuarantinedAsync());
        Assert.Equal((2L, "r1", "u", "the engine could not use it"), (q.Sequence, q.Id, q.UserId, q.Reason));
        Assert.Equal([2L, 9], await m.GetMissingAsync([1, 2, 3, 9, 2]));
        Assert.True(await m.DeleteQuarantinedAsync(2));
        Assert.False(await m.DeleteQuarantinedAsync(2));
        Assert.Empty(await m.ListQuarantinedAsync());
    }

    [SkippableFact]
    public async Task A_damaged_row_is_quarantined_on_read_and_the_others_are_returned()
    {
        var store = Open();
        for (var i = 0; i < 3; i++) await store.AppendAsync(Record($"r{i}", null));
        CloseAll();
        await DamageTensorsAsync(2);
        store = Open();
        Assert.Equal([1L, 3], (await store.GetTrainingSinceAsync(0, 10)).Select(r => r.Sequence));
        var q = Assert.Single(await ((IFeedbackMaintenance)store).ListQuarantinedAsync());
        Assert.Equal(2, q.Sequence);
        Assert.Contains("cannot be read", q.Reason, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task The_round_ledger_tracks_waiting_pending_and_retired_records_and_moves_the_watermark()
    {
        var store = Open();
        var ledger = (IRoundLedger)store;
        for (var i = 0; i < 6; i++) await store.AppendAsync(Record($"r{i}", null));
        // Round 1 rejected: 1 and 2 pending (1 attempt), 3 deferred (waiting).
        await ledger.CommitRoundAsync([1, 2], [3], promoted: false, maxRetries: 1, "wm", 3, default);
        Assert.Equal("3", await store.GetStateAsync("wm"));
        Assert.Equal(LedgerState.Pending, await ledger.GetLedgerStateAsync(1, default));
        Assert.Equal(LedgerState.Waiting, await ledger.GetLedgerStateAsync(3, default));
        Assert.Null(await ledger.GetLedgerStateAsync(4, default));
        Assert.Equal([1L, 2, 3], (await ledger.GetUnconfirmedAsync(1, default)).Select(r => r.Sequence));
        // Replay never draws unconfirmed records.
        Assert.Equal([4L, 5, 6], (await store.GetReplaySampleAsync(10, 10, 1)).Select(r => r.Sequence));
        // Round 2 rejected again: 1 is retired (2 attempts > 1 retry); 2 was deleted meanwhile and is skipped.
        await ((IFeedbackMaintenance)store).QuarantineAsync(2, "gone");
        await ledger.CommitRoundAsync([1, 2], [], promoted: false, maxRetries: 1, "wm", 6, default);
        Assert.Equal(LedgerState.Retired, await ledger.GetLedgerStateAsync(1, default));
        Assert.Null(await ledger.GetLedgerStateAsync(2, default));
        var counts = await ledger.CountLedgerAsync(default);
        Assert.Equal((0L, 1L, 1L), (counts[LedgerState.Pending], counts[LedgerState.Retired], counts[LedgerState.Waiting]));
        Assert.Equal([3L], (await ledger.GetUnconfirmedAsync(1, default)).Select(r => r.Sequence));
        // Round 3 promoted: its records are confirmed (they leave the ledger and join replay).
        await ledger.CommitRoundAsync([3], [], promoted: true, maxRetries: 1, "wm", 6, default);
        Assert.Null(await ledger.GetLedgerStateAsync(3, default));
        Assert.Equal([3L, 4, 5, 6], (await store.GetReplaySampleAsync(10, 10, 1)).Select(r => r.Sequence));
        Assert.Equal("6", await store.GetStateAsync("wm"));
    }

    [SkippableFact]
    public async Task The_held_out_sample_takes_the_latest_records_plus_older_ones_spread_over_classes()
    {
        var store = Open();
        for (var i = 0; i < 30; i++) await store.AppendAsync(Record($"r{i}", null, heldOut: i % 3 != 2, label: i % 3));
        var ledger = (IRoundLedger)store;
        var all = await store.GetHeldOutAsync(100);
        Assert.Equal(20, all.Count);
        var sample = await ledger.GetHeldOutSampleAsync(100, recent: 5, older: 4, seed: 3, default);
        Assert.Equal(9, sample.Count);
        Assert.Equal(all.TakeLast(5).Select(r => r.Sequence), sample.TakeLast(5).Select(r => r.Sequence));
        Assert.Equal(sample.Select(r => r.Sequence).Order(), sample.Select(r => r.Sequence));
        Assert.Equal(2, sample.Take(4).Count(r => r.LabelIndex == 0));
        Assert.Equal(sample.Select(r => r.Sequence), (await ledger.GetHeldOutSampleAsync(100, 5, 4, 3, default)).Select(r => r.Sequence));
    }

    [SkippableFact]
    public async Task State_is_created_atomically_once_and_the_user_hash_secret_survives_reopening()
    {
        var store = Open();
        var ledger = (IRoundLedger)store;
        Assert.Equal("first", await ledger.GetOrAddStateAsync("s", "first", default));
        Assert.Equal("first", await ledger.GetOrAddStateAsync("s", "second", default));
        var hash = ((IFeedbackMaintenance)store).HashUserId("alice");
        Assert.Equal(64, hash.Length);
        Assert.NotEqual(hash, ((IFeedbackMaintenance)store).HashUserId("bob"));
        CloseAll();
        Assert.Equal(hash, ((IFeedbackMaintenance)Open()).HashUserId("alice"));
    }
}
