using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Hosting.Internal;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Tests.Gate;

/// <summary>Attacks on the gate through the feedback stream it judges, and the rules that stop them.</summary>
public sealed class GateAttackTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly OnnxTuneMetrics _metrics = new(null);

    public void Dispose()
    {
        _metrics.Dispose();
        _dir.Dispose();
    }

    private FeedbackWriter Writer(IFeedbackStore store, double share, Action<OnDeviceFineTuningOptions>? configure = null)
    {
        // A model with a tokenizer, so that text feedback is accepted (the schema checks only that one is recorded).
        if (!Directory.Exists(_dir.Sub("art")))
        {
            TestModels.WriteArtifacts(_dir.Sub("art"), properties: new Dictionary<string, string> { ["onnxtune.tokenizer.vocab"] = "vocab.txt" });
            File.WriteAllLines(Path.Combine(_dir.Sub("art"), "vocab.txt"), ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]);
        }
        var options = new OnDeviceFineTuningOptions { ArtifactsPath = _dir.Sub("art") };
        configure?.Invoke(options);
        return new FeedbackWriter("m", new FeedbackSchema(ArtifactManifest.Load(_dir.Sub("art")), options), store, share, TimeProvider.System, _metrics, NullLogger.Instance);
    }

    /// <summary>The pre-keyed assignment (an unkeyed SHA-256 of the input): what an attacker can compute offline.</summary>
    private static bool UnkeyedSide(string text, double share)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(HeldOutAssignment.InputKey(text, null)));
        return BinaryPrimitives.ReadUInt64LittleEndian(hash) / 18446744073709551616.0 < share;
    }

    [Fact]
    public async Task The_held_out_side_needs_the_store_secret_two_stores_split_differently_and_an_offline_guess_is_chance()
    {
        var texts = Enumerable.Range(0, 200).Select(i => $"move {i} dollars to savings").ToList();
        var sides = new List<bool[]>();
        var secrets = new List<string>();
        foreach (var db in new[] { "a.db", "b.db" })
        {
            using var store = new SqliteFeedbackStore(_dir.Sub(db));
            var w = Writer(store, 0.5);
            var s = new bool[texts.Count];
            for (var i = 0; i < texts.Count; i++) s[i] = (await w.WriteAsync(Feedback.ForText(texts[i], 0))).HeldOut;
            sides.Add(s);
            secrets.Add((await store.GetStateAsync(HeldOutSecret.StateKey))!);
            // A second writer on the same store (a restart) reads the same secret: the same input keeps its side.
            var again = Writer(store, 0.5);
            for (var i = 0; i < 20; i++) Assert.Equal(s[i], (await again.WriteAsync(Feedback.ForText(texts[i], 1))).HeldOut);
        }
        Assert.Equal(64, secrets[0].Length);
        Assert.NotEqual(secrets[0], secrets[1]);
        var disagree = Enumerable.Range(0, texts.Count).Count(i => sides[0][i] != sides[1][i]);
        var guessed = Enumerable.Range(0, texts.Count).Count(i => sides[0][i] == UnkeyedSide(texts[i], 0.5));
        // "Append a space": the attacker keeps, for each text, the variant the offline hash puts on the side he wants.
        var chosen = texts.Select(t => UnkeyedSide(t, 0.5) ? t + " " : t).ToList();
        using var third = new SqliteFeedbackStore(_dir.Sub("c.db"));
        var wc = Writer(third, 0.5);
        var landedHeldOut = 0;
        foreach (var t in chosen) if ((await wc.WriteAsync(Feedback.ForText(t, 0))).HeldOut) landedHeldOut++;
        output.WriteLine($"two stores disagree on {disagree}/200 sides; the unkeyed guess matches {guessed}/200; " +
            $"texts steered to 'training' by appending a space landed held out {landedHeldOut}/200");
        Assert.InRange(disagree, 65, 135);
        Assert.InRange(guessed, 65, 135);
        Assert.InRange(landedHeldOut, 65, 135);

        // Records of an older store keep their stored flag.
        using var old = new SqliteFeedbackStore(_dir.Sub("a.db"));
        await old.AppendAsync(new FeedbackRecord { Id = "legacy", Text = "legacy", LabelIndex = 0, HeldOut = true });
        Assert.Contains(await old.GetHeldOutAsync(long.MaxValue), r => r.Id == "legacy");
    }

    [Fact]
    public async Task An_enormous_weight_is_rejected_at_write_and_a_stored_one_does_not_decide_the_gate()
    {
        using (var store = new SqliteFeedbackStore(_dir.Sub("w.db")))
        {
            var w = Writer(store, 0.1);
            var e = await Assert.ThrowsAsync<FeedbackValidationException>(() =>
                w.WriteAsync(Feedback.ForTensors(TestModels.Input(TensorData.Float([1, 2, 3, 4], 1, 4)), 0) with { Weight = 3e38f }).AsTask());
            Assert.Equal((FeedbackErrorKind.InvalidWeight, "Weight"), (e.Kind, e.Field));
            Assert.Contains("MaxFeedbackWeight", e.Message, StringComparison.Ordinal);
            await w.WriteAsync(Feedback.ForTensors(TestModels.Input(TensorData.Float([1, 2, 3, 4], 1, 4)), 0) with { Weight = 10 });
            await Assert.ThrowsAsync<FeedbackValidationException>(() =>
                w.WriteAsync(Feedback.ForTensors(TestModels.Input(TensorData.Float([1, 2, 3, 4], 1, 4)), 0) with { Weight = 10.5f }).AsTask());
            var wide = Writer(store, 0.1, o => o.MaxFeedbackWeight = 100);
            await wide.WriteAsync(Feedback.ForTensors(TestModels.Input(TensorData.Float([1, 2, 3, 4], 1, 4)), 0) with { Weight = 50 });
        }

        // A record stored before the bound (weight 3e38) on which only the candidate is right: weighted accuracy
        // would make the candidate ~1.0 against ~0.0; the gate's unweighted accuracy is 1/31 against 30/31.
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        var rng = new Random(1);
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 30).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 0, heldOut: true)));
        await GateKit.AppendAsync(h.Store, [GateKit.Record(TestModels.X(rng).FloatData!, 2, heldOut: true, weight: 3e38f)]);
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 2, heldOut: false)));
        round.Then(2);
        var r = await h.NextRoundAsync();
        var d = r.Decision!;
        output.WriteLine($"{r.Outcome}: held-out {d.Serving.HeldOutMetric:F3} -> {d.Candidate.HeldOutMetric:F3}; {string.Join("; ", d.Reasons)}");
        Assert.Equal(RoundOutcome.Rejected, r.Outcome);
        Assert.Equal(1 / 31.0, d.Candidate.HeldOutMetric!.Value, 9);
        Assert.Equal(30 / 31.0, d.Serving.HeldOutMetric!.Value, 9);
        Assert.Contains(d.Checks, c => c.Gate == "held-out" && !c.Passed);
    }

    [Fact]
    public async Task A_targeted_flip_of_one_class_is_rejected_by_the_per_class_floor_while_overall_accuracy_holds()
    {
        // 30 intents. The serving (base) model does not know intent 5 yet (it says 0). The poisoned round teaches
        // intent 5 but 10% of its records relabel intent 3 as 4, and the candidate learnt the flip: overall accuracy
        // is unchanged (intent 5 gained what intent 3 lost), held-out and golden checks pass, the per-class floor does not.
        const int k = 30;
        var rng = new Random(2);
        var replay = Enumerable.Range(0, k * 10).Select(i => (GateKit.Near(k, i % k, rng), i % k)).ToList();
        GateKit.WriteJsonLines(Path.Combine(Directory.CreateDirectory(_dir.Sub("artifacts")).FullName, "replay.jsonl"), replay);
        GateKit.WriteArtifacts(_dir.Sub("artifacts"), k, GateKit.Mapping(k, (5, 0)), new Dictionary<string, string> { [GoldenReference.ReplayProperty] = "replay.jsonl" });
        var round = new ModelRound(k).Then(GateKit.Mapping(k, (3, 4)));
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, k * 20).Select(i => GateKit.Record(GateKit.Near(k, i % k, rng), i % k, heldOut: true)));
        var poisoned = Enumerable.Range(0, 100).Select(i => i < 10 ? GateKit.Record(GateKit.Near(k, 3, rng), 4, false, "mallory")
            : GateKit.Record(GateKit.Near(k, i % 2 == 0 ? 5 : i % k, rng), i % 2 == 0 ? 5 : i % k, false, $"user{i % 7}")).ToList();
        await GateKit.AppendAsync(h.Store, poisoned);
        var r = await h.NextRoundAsync();
        var d = r.Decision!;
        output.WriteLine($"{r.Outcome}: golden ({d.Golden?.Source}) {d.Serving.GoldenMetric:F3} -> {d.Candidate.GoldenMetric:F3}, held-out {d.Serving.HeldOutMetric:F3} -> {d.Candidate.HeldOutMetric:F3}");
        foreach (var c in d.Checks) output.WriteLine($"  {c.Gate}: {(c.Passed ? "pass" : "FAIL")} {c.Detail}");
        Assert.Equal(RoundOutcome.Rejected, r.Outcome);
        Assert.Equal("replay set", d.Golden!.Source);
        Assert.Equal(d.Serving.GoldenMetric, d.Candidate.GoldenMetric);
        Assert.Equal(d.Serving.HeldOutMetric, d.Candidate.HeldOutMetric);
        Assert.True(d.Checks.Single(c => c.Gate == "golden-set").Passed);
        Assert.True(d.Checks.Single(c => c.Gate == "held-out").Passed);
        Assert.False(d.Checks.Single(c => c.Gate == "per-class").Passed);
        var worst = d.ClassDeltas[0];
        Assert.Equal((3L, 1.0, 0.0, 30), (worst.ClassIndex, worst.Serving, worst.Candidate, worst.Support));
        Assert.Equal(GateEvaluation.ReportedClassDeltas, d.ClassDeltas.Count); // the worst ten of the 30 classes
        Assert.Empty(d.Warnings);
    }

    [Fact]
    public async Task A_clean_round_that_is_merely_as_good_is_promoted_and_says_that_no_golden_set_judged_it()
    {
        // 197 records both models get right, 3 near-ties: the candidate fixes one and breaks two. "Strictly better by
        // more than 0" rejected this; the non-inferiority bound (-0.0127 against a margin of -0.02) accepts it.
        const int k = 3;
        GateKit.WriteArtifacts(_dir.Sub("artifacts"), k, GateKit.Mapping(k));
        var candidate = GateKit.Mapping(k);
        candidate.W[1 * k + 1] = 1.05f;
        var round = new ModelRound(k).Then(candidate);
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        var rng = new Random(3);
        float[] tie = [0.5f, 0.49f, 0];
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 197).Select(i => GateKit.Record(GateKit.Near(k, i % k, rng), i % k, heldOut: true))
            .Concat([GateKit.Record(tie, 1, true), GateKit.Record(tie, 0, true), GateKit.Record(tie, 0, true)]));
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(i => GateKit.Record(GateKit.Near(k, i % k, rng), i % k, false)));
        var r = await h.NextRoundAsync();
        var d = r.Decision!;
        output.WriteLine($"{r.Outcome}: {string.Join(" | ", d.Checks.Select(c => $"{c.Gate}: {c.Detail}"))}");
        Assert.Equal(RoundOutcome.Promoted, r.Outcome);
        Assert.Equal((200, 2, 1), (d.HeldOut!.Count, d.HeldOut.ServingOnlyCorrect, d.HeldOut.CandidateOnlyCorrect));
        Assert.True(d.Candidate.HeldOutMetric < d.Serving.HeldOutMetric);
        Assert.InRange(d.HeldOut.LowerBound, -0.02, -0.005);
        Assert.Contains(d.Warnings, w => w.Contains("no golden set", StringComparison.Ordinal));
        Assert.Contains("no golden set", d.Checks.Single(c => c.Gate == "golden-set").Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Rejected_rounds_records_stay_out_of_replay_are_retried_as_new_and_a_promotion_confirms_them()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o =>
        {
            o.MinHeldOutImprovement = 0;
            o.Gate.MaxRejectedRetries = 1;
        });
        var ledger = (IRoundLedger)h.Store;
        var rng = new Random(4);
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 20).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 0, heldOut: true)));
        async Task<long[]> Batch()
        {
            var from = await h.Store.GetLatestSequenceAsync();
            await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 0, heldOut: false)));
            return Enumerable.Range(1, 10).Select(i => from + i).ToArray();
        }
        static long[] Seqs(IReadOnlyList<FeedbackRecord> records) => records.Select(r => r.Sequence).Order().ToArray();

        var a = await Batch();
        round.Then(1); // worse than the serving model on every held-out record
        Assert.Equal(RoundOutcome.Rejected, (await h.NextRoundAsync()).Outcome);
        Assert.Equal(LedgerState.Pending, await ledger.GetLedgerStateAsync(a[0], default));

        var b = await Batch();
        round.Then(1);
        Assert.Equal(RoundOutcome.Rejected, (await h.NextRoundAsync()).Outcome);
        Assert.Equal(a.Concat(b), Seqs(round.Inputs[1].NewFeedback)); // retried together with the newer feedback
        Assert.Empty(round.Inputs[1].ReplaySample);                    // nothing confirmed yet: nothing to replay
        Assert.Equal(LedgerState.Retired, await ledger.GetLedgerStateAsync(a[0], default)); // rejected twice, MaxRejectedRetries = 1
        Assert.Equal(LedgerState.Pending, await ledger.GetLedgerStateAsync(b[0], default));

        var c = await Batch();
        round.Then(0); // as good as the serving model: promoted
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        Assert.Equal(b.Concat(c), Seqs(round.Inputs[2].NewFeedback));
        Assert.Empty(round.Inputs[2].ReplaySample);
        Assert.Null(await ledger.GetLedgerStateAsync(b[0], default)); // confirmed
        Assert.Null(await ledger.GetLedgerStateAsync(c[0], default));

        var d = await Batch();
        round.Then(0);
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        Assert.Equal(d, Seqs(round.Inputs[3].NewFeedback));
        Assert.Equal(20, round.Inputs[3].ReplaySample.Count); // ReplayRatio 2 × 10 new records: every confirmed one
        Assert.All(round.Inputs[3].ReplaySample, r => Assert.Contains(r.Sequence, b.Concat(c)));
        Assert.All(round.Inputs.SelectMany(i => i.ReplaySample), r => Assert.DoesNotContain(r.Sequence, a));
        var counts = await ledger.CountLedgerAsync(default);
        Assert.Equal((0L, 0L, 10L), (counts[LedgerState.Waiting], counts[LedgerState.Pending], counts[LedgerState.Retired]));
    }

    [Fact]
    public async Task One_users_share_of_a_round_is_capped_and_the_rest_waits_for_later_rounds()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o => o.MinHeldOutImprovement = 0);
        var ledger = (IRoundLedger)h.Store;
        var rng = new Random(5);
        FeedbackRecord R(string user) => GateKit.Record(TestModels.X(rng).FloatData!, 2, heldOut: false, user);
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 2, heldOut: true)));
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 60).Select(_ => R("mallory")));
        await GateKit.AppendAsync(h.Store, new[] { "u1", "u2", "u3" }.SelectMany(u => Enumerable.Range(0, 5).Select(_ => R(u))));
        round.Then(2);
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        var first = round.Inputs[0].NewFeedback;
        Assert.Equal(20, first.Count);
        Assert.Equal(5, first.Count(r => r.UserId == "mallory")); // 25% of the round
        Assert.Equal(55L, (await ledger.CountLedgerAsync(default))[LedgerState.Waiting]);

        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 8).Select(_ => R("u4")));
        round.Then(2);
        Assert.Equal(RoundOutcome.Promoted, (await h.NextRoundAsync()).Outcome);
        var second = round.Inputs[1].NewFeedback;
        // Two users wait: each may have half. Mallory's oldest waiting records go first.
        Assert.Equal((8, 8), (second.Count(r => r.UserId == "mallory"), second.Count(r => r.UserId == "u4")));
        Assert.True(second.Where(r => r.UserId == "mallory").Min(r => r.Sequence) > first.Where(r => r.UserId == "mallory").Max(r => r.Sequence));
        Assert.Equal(47L, (await ledger.CountLedgerAsync(default))[LedgerState.Waiting]);
        var waiting = (await ledger.GetUnconfirmedAsync(2, default)).Select(r => r.Sequence).ToHashSet();
        Assert.All(round.Inputs[1].ReplaySample, r => Assert.DoesNotContain(r.Sequence, waiting));
    }

    [Fact]
    public void The_cap_leaves_a_single_user_and_anonymous_records_alone()
    {
        static FeedbackRecord R(long seq, string? user) => new() { Id = $"r{seq}", Sequence = seq, UserId = user };
        var solo = Enumerable.Range(1, 50).Select(i => R(i, "me")).ToList();
        Assert.Equal(50, RoundSelection.Cap(solo, 0.25).Selected.Count);
        var mixed = Enumerable.Range(1, 40).Select(i => R(i, "big")).Concat(Enumerable.Range(41, 30).Select(i => R(i, null)))
            .Concat(Enumerable.Range(71, 4).Select(i => R(i, $"u{i}"))).ToList();
        var (selected, deferred) = RoundSelection.Cap(mixed, 0.25);
        var big = selected.Count(r => r.UserId == "big");
        Assert.True(big <= 0.25 * selected.Count, $"{big} of {selected.Count}");
        Assert.Equal(30, selected.Count(r => r.UserId is null));
        Assert.Equal(40 - big, deferred.Count);
    }
}
