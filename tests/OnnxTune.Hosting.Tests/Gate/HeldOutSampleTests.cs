using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests.Gate;

/// <summary>The gate's cost stays bounded: a bounded held-out sample, scored in stacked batches.</summary>
public sealed class HeldOutSampleTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task The_sample_is_the_most_recent_records_plus_older_ones_spread_over_classes()
    {
        using var store = new SqliteFeedbackStore(_dir.Sub("s.db"));
        var rng = new Random(1);
        // 60 held-out records: the first 45 cycle through classes 0..2, plus training records in between.
        for (var i = 0; i < 60; i++)
        {
            await store.AppendAsync(GateKit.Record(TestModels.X(rng).FloatData!, i % 3, heldOut: true));
            await store.AppendAsync(GateKit.Record(TestModels.X(rng).FloatData!, 0, heldOut: false));
        }
        var ledger = (IRoundLedger)store;
        var sample = await ledger.GetHeldOutSampleAsync(long.MaxValue, recent: 15, older: 6, seed: 0, default);
        var all = await store.GetHeldOutAsync(long.MaxValue);
        Assert.Equal(21, sample.Count);
        Assert.All(sample, r => Assert.True(r.HeldOut));
        Assert.Equal(all.TakeLast(15).Select(r => r.Sequence), sample.TakeLast(15).Select(r => r.Sequence));
        Assert.Equal([2, 2, 2], sample.Take(6).GroupBy(r => r.LabelIndex).OrderBy(g => g.Key).Select(g => g.Count()));
        Assert.Equal(sample.Select(r => r.Sequence).Order(), sample.Select(r => r.Sequence));
        Assert.Equal(sample.Select(r => r.Id), (await ledger.GetHeldOutSampleAsync(long.MaxValue, 15, 6, 0, default)).Select(r => r.Id));
    }

    [Fact]
    public async Task The_gate_scores_a_bounded_sample()
    {
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o =>
        {
            o.Gate.HeldOutSampleRecent = 25;
            o.Gate.HeldOutSampleOlder = 5;
        });
        var rng = new Random(2);
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 80).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 2, heldOut: true)));
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(_ => GateKit.Record(TestModels.X(rng).FloatData!, 2, heldOut: false)));
        round.Then(2);
        var r = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Promoted, r.Outcome);
        Assert.Equal(30, r.Decision!.Candidate.HeldOutCount);
        Assert.Equal(30, r.Decision.HeldOut!.Count);
    }

    [Fact]
    public void The_evaluator_stacks_records_of_equal_shape_into_batched_runs()
    {
        var model = _dir.Sub("m.onnx");
        var (w, b) = TestModels.Params(0.5f, [0.1f, -0.2f, 0.05f]);
        TestModels.WriteLinear(model, w, b);
        var rng = new Random(3);
        var records = Enumerable.Range(0, 130).Select(i => GateKit.Record(TestModels.X(rng).FloatData!, i % 3, heldOut: true)).ToList();
        // One record with two rows cannot be stacked: it runs alone (and is refused, as one record must give one row).
        var evaluator = new AccuracyEvaluator(new TensorFeedbackEncoder("m"), "y", 1);
        var p = evaluator.Predict(model, records, default);
        Assert.Equal(3, evaluator.Runs); // 64 + 64 + 2
        Assert.True(p.OutputsFinite);
        for (var i = 0; i < records.Count; i++)
        {
            var y = TestModels.Expected(records[i].Tensors!["x"].FloatData!, w, b);
            Assert.Equal(Array.IndexOf(y, y.Max()), p.Predicted[i]);
        }
        var twoRows = records[0] with { Tensors = new Dictionary<string, TensorData> { ["x"] = TensorData.Float(new float[8], 2, 4) } };
        Assert.Throws<OnnxTuneException>(() => evaluator.Predict(model, [twoRows], default));
    }
}
