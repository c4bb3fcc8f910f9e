namespace OnnxTune.Hosting.Tests.Gate;

/// <summary>The golden-set check compares with the base model and the best kept version, not only the serving one.</summary>
public sealed class GoldenBaselineTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Golden_accuracy_cannot_ratchet_down_one_tolerance_per_round()
    {
        // 30 classes, one golden record each; the base model gets all 30 right. Each candidate loses one more class
        // (1/30 = 0.033 of golden accuracy) with a tolerance of 0.05: measured against the serving version alone,
        // every round would pass and quality would fall without end.
        const int k = 30;
        var rng = new Random(1);
        var golden = GateKit.WriteJsonLines(_dir.Sub("golden.jsonl"), Enumerable.Range(0, k).Select(c => (GateKit.Near(k, c, rng), c)));
        GateKit.WriteArtifacts(_dir.Sub("artifacts"), k, GateKit.Mapping(k));
        var round = new ModelRound(k).Then(GateKit.Mapping(k, (0, 1))).Then(GateKit.Mapping(k, (0, 1), (2, 3)));
        await using var h = await Harness.StartAsync(_dir, round, o =>
        {
            o.GoldenSetPath = golden;
            o.GoldenTolerance = 0.05;
            o.MinHeldOutImprovement = 0;
        });
        // Held-out and training records of classes the candidates do not touch.
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 40).Select(i => GateKit.Record(GateKit.Near(k, 10 + i % 20, rng), 10 + i % 20, heldOut: true)));
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(i => GateKit.Record(GateKit.Near(k, 10 + i, rng), 10 + i, heldOut: false)));
        var first = await h.NextRoundAsync();
        Assert.Equal(RoundOutcome.Promoted, first.Outcome); // 0.967 ≥ max(base 1.0, serving 1.0) − 0.05
        await GateKit.AppendAsync(h.Store, Enumerable.Range(0, 10).Select(i => GateKit.Record(GateKit.Near(k, 10 + i, rng), 10 + i, heldOut: false)));
        var second = await h.NextRoundAsync();
        var d = second.Decision!;
        // 0.933 ≥ serving 0.967 − 0.05 = 0.917 would pass; the base floor 1.0 − 0.05 = 0.95 does not.
        Assert.Equal(RoundOutcome.Rejected, second.Outcome);
        Assert.Equal(1.0, d.Golden!.Base);
        Assert.Equal(29 / 30.0, d.Golden.Best!.Value, 9);
        Assert.Equal(1, d.Golden.BestVersion);
        Assert.Equal(28 / 30.0, d.Candidate.GoldenMetric!.Value, 9);
        var golden2 = d.Checks.Single(c => c.Gate == "golden-set");
        Assert.False(golden2.Passed);
        Assert.Contains("max(base, serving)", golden2.Detail, StringComparison.Ordinal);
        Assert.True(d.Checks.Single(c => c.Gate == "held-out").Passed);
    }

    [Fact]
    public async Task Gate_options_are_validated_at_start_up_with_their_configuration_key()
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => Harness.StartAsync(_dir, null, o =>
        {
            o.Gate.HeldOutMargin = 2;
            o.DriftWatch.MinPredictions = 0;
        }));
        Assert.Contains("Gate.HeldOutMargin", e.Message, StringComparison.Ordinal);
        Assert.Contains("DriftWatch.MinPredictions", e.Message, StringComparison.Ordinal);
    }
}
