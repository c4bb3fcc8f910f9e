namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>IFineTuningAdmin.RunRoundAsync: a round on request, awaited to its decision, with its statistics.</summary>
public sealed class RequestedRoundTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_requested_round_runs_below_the_trigger_and_reports_its_counts_and_timings()
    {
        Clusters.WriteArtifacts(_dir.Sub("artifacts"));
        // MinNewFeedback far above what is written: the loop itself would never start this round.
        await using var h = await Harness.StartAsync(_dir, round: null, o =>
        {
            o.MinNewFeedback = 1000;
            o.MaxInterval = TimeSpan.FromDays(1);
            o.EpochsPerRound = 3;
            o.MinHeldOutImprovement = 0;
        });
        foreach (var (x, y) in Clusters.Sample(40, seed: 1))
            await h.Writer.WriteAsync(Feedback.ForTensors(Clusters.Tensors(x), y));
        var completed = await h.Admin.RunRoundAsync();
        Assert.NotNull(completed);
        Assert.True(completed.Outcome != RoundOutcome.Failed, completed.Error?.ToString());
        Assert.NotNull(completed.Decision);
        var stats = completed.Statistics;
        Assert.InRange(stats.NewRecords, 1, 40); // the held-out share never trains
        Assert.Equal(3, stats.EpochLosses.Count);
        Assert.All(stats.EpochLosses, l => Assert.True(double.IsFinite(l) && l > 0));
        Assert.True(stats.Steps >= 3);
        Assert.True(stats.TrainTime > TimeSpan.Zero && stats.GateTime > TimeSpan.Zero);
        Assert.True(stats.TrainTime <= completed.Duration);
        Assert.Equal(completed.Outcome == RoundOutcome.Promoted, stats.PromotionTime > TimeSpan.Zero);

        // Nothing new: no round.
        Assert.Null(await h.Admin.RunRoundAsync());
    }
}
