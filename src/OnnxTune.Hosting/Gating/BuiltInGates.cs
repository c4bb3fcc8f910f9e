using System.Globalization;

namespace OnnxTune.Hosting.Internal;

/// <summary>Candidate weights and outputs must be finite.</summary>
internal sealed class FiniteGate : IValidationGate
{
    public string Name => "finite";

    public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken) =>
        ValueTask.FromResult(
            !context.CandidateWeightsFinite ? GateCheckResult.Fail(Name, "the candidate has NaN or infinite weights")
            : !context.Candidate.OutputsFinite ? GateCheckResult.Fail(Name, "the candidate produced NaN or infinite outputs")
            : GateCheckResult.Pass(Name, "weights and outputs are finite"));
}

/// <summary>The golden-set metric may not fall by more than the tolerance (skipped without a golden set).</summary>
internal sealed class GoldenSetGate(double tolerance) : IValidationGate
{
    public string Name => "golden-set";

    public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken)
    {
        if (context.Candidate.GoldenMetric is not { } c || context.Serving.GoldenMetric is not { } s)
            return ValueTask.FromResult(GateCheckResult.Pass(Name, "no golden set configured"));
        var detail = string.Create(CultureInfo.InvariantCulture, $"candidate {c:F4} vs serving {s:F4} (tolerance {tolerance:F4}, n={context.Candidate.GoldenCount})");
        return ValueTask.FromResult(c >= s - tolerance - 1e-12 ? GateCheckResult.Pass(Name, detail) : GateCheckResult.Fail(Name, "golden-set metric fell: " + detail));
    }
}

/// <summary>The held-out metric must improve by at least the minimum delta.</summary>
internal sealed class HeldOutGate(double minImprovement) : IValidationGate
{
    public string Name => "held-out";

    public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken)
    {
        if (context.Candidate.HeldOutMetric is not { } c || context.Serving.HeldOutMetric is not { } s)
            return ValueTask.FromResult(GateCheckResult.Fail(Name, "no held-out feedback to compare on yet"));
        var detail = string.Create(CultureInfo.InvariantCulture, $"candidate {c:F4} vs serving {s:F4} (min improvement {minImprovement:F4}, n={context.Candidate.HeldOutCount})");
        return ValueTask.FromResult(c - s >= minImprovement - 1e-12 ? GateCheckResult.Pass(Name, detail) : GateCheckResult.Fail(Name, "held-out metric did not improve enough: " + detail));
    }
}
