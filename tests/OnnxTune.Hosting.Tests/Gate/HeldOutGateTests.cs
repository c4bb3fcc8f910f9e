using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests.Gate;

/// <summary>The held-out non-inferiority rule on small samples: inconclusive is said as such, never as "worse".</summary>
public sealed class HeldOutGateTests
{
    private static GateContext Context(int n, int servingOnly, int candidateOnly, double margin = 0.02, double confidence = 0.95)
    {
        var both = n - servingOnly - candidateOnly;
        return new GateContext
        {
            ModelName = "m",
            Round = 1,
            ServingModelPath = "serving.onnx",
            CandidateModelPath = "candidate.onnx",
            TrainLoss = 0.1,
            Serving = new EvaluationResult((servingOnly + both) / (double)n, n, null, 0, true),
            Candidate = new EvaluationResult((candidateOnly + both) / (double)n, n, null, 0, true),
            CandidateWeightsFinite = true,
            HeldOut = HeldOutGate.Compare(n, servingOnly, candidateOnly, margin, confidence),
        };
    }

    private static async Task<GateCheckResult> Judge(GateContext c) => await new HeldOutGate(0).EvaluateAsync(c, default);

    [Fact]
    public void The_smallest_conclusive_sample_follows_the_wilson_bound()
    {
        // Every discordant pair for the candidate: the 95% bound is -0.46 at n=1, -0.15 at n=2, +0.05 at n=3.
        Assert.Equal(3, HeldOutGate.MinConclusiveCount(0.02, 0.95));
        Assert.True(HeldOutGate.Compare(2, 0, 2, 0.02, 0.95).LowerBound < -0.02);
        Assert.True(HeldOutGate.Compare(3, 0, 3, 0.02, 0.95).LowerBound >= -0.02);
        // A wider margin or lower confidence needs fewer records.
        Assert.True(HeldOutGate.MinConclusiveCount(0.5, 0.95) < 3);
        Assert.True(HeldOutGate.MinConclusiveCount(0.02, 0.999) > 3);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_perfect_candidate_on_too_few_records_is_rejected_as_inconclusive_not_worse(int n)
    {
        var r = await Judge(Context(n, servingOnly: 0, candidateOnly: n));
        Assert.False(r.Passed);
        Assert.StartsWith($"held-out sample too small to conclude: {n} record(s), at least 3 needed", r.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Three_records_all_for_the_candidate_pass()
    {
        var r = await Judge(Context(3, servingOnly: 0, candidateOnly: 3));
        Assert.True(r.Passed, r.Detail);
    }

    [Fact]
    public async Task A_candidate_that_loses_records_the_serving_model_got_right_is_worse_whatever_the_sample_size()
    {
        var r = await Judge(Context(2, servingOnly: 1, candidateOnly: 0));
        Assert.False(r.Passed);
        Assert.StartsWith("held-out accuracy is worse beyond the margin", r.Detail, StringComparison.Ordinal);
        r = await Judge(Context(200, servingOnly: 30, candidateOnly: 10));
        Assert.StartsWith("held-out accuracy is worse beyond the margin", r.Detail, StringComparison.Ordinal);
    }
}
