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

/// <summary>
/// Golden-reference accuracy: candidate ≥ max(base, serving) − tolerance and ≥ best kept version − 2·tolerance, so
/// quality cannot ratchet down one tolerance per round. Without any golden reference it passes and says so.
/// </summary>
internal sealed class GoldenSetGate(double tolerance) : IValidationGate
{
    internal const string NoReference = "WARNING: no golden set and no replay set in the artifacts; the golden-set check did not run, only held-out feedback judged this candidate";

    public string Name => "golden-set";

    public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken)
    {
        if (context.Candidate.GoldenMetric is not { } c || context.Serving.GoldenMetric is not { } s)
            return ValueTask.FromResult(GateCheckResult.Pass(Name, NoReference));
        var g = context.Golden;
        var floor = Math.Max(s, g?.Base ?? s) - tolerance;
        var bestFloor = g?.Best is { } best ? best - 2 * tolerance : double.NegativeInfinity;
        var detail = string.Create(CultureInfo.InvariantCulture,
            $"candidate {c:F4} vs serving {s:F4}, base {Fmt(g?.Base)}, best {Fmt(g?.Best)}{(g?.BestVersion is { } bv ? $" (v{bv})" : "")} on the {g?.Source ?? "golden set"} (n={context.Candidate.GoldenCount}); floor max(base, serving) − {tolerance:F4} = {floor:F4}, best − 2·tolerance = {(double.IsNegativeInfinity(bestFloor) ? "-" : bestFloor.ToString("F4", CultureInfo.InvariantCulture))}");
        var pass = c >= floor - 1e-12 && c >= bestFloor - 1e-12;
        return ValueTask.FromResult(pass ? GateCheckResult.Pass(Name, detail) : GateCheckResult.Fail(Name, "golden-set metric fell: " + detail));
    }

    private static string Fmt(double? v) => v is { } x ? x.ToString("F4", CultureInfo.InvariantCulture) : "-";
}

/// <summary>
/// Promotion rule: non-inferiority on the paired held-out sample (see <see cref="GateOptions.HeldOutMargin"/>), plus
/// the optional minimum improvement of the point estimate.
/// </summary>
internal sealed class HeldOutGate(double minImprovement) : IValidationGate
{
    public string Name => "held-out";

    public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken)
    {
        if (context.Candidate.HeldOutMetric is not { } c || context.Serving.HeldOutMetric is not { } s || context.HeldOut is not { } p)
            return ValueTask.FromResult(GateCheckResult.Fail(Name, "no held-out feedback to compare on yet"));
        var extra = minImprovement > 0 ? string.Create(CultureInfo.InvariantCulture, $", min improvement {minImprovement:F4}") : "";
        var detail = string.Create(CultureInfo.InvariantCulture,
            $"candidate {c:F4} vs serving {s:F4} (n={p.Count}, only serving right {p.ServingOnlyCorrect}, only candidate right {p.CandidateOnlyCorrect}); difference {p.Difference:+0.0000;-0.0000}, {p.Confidence:P0} lower bound {p.LowerBound:+0.0000;-0.0000} vs margin −{p.Margin:F4}{extra}");
        if (p.LowerBound < -p.Margin - 1e-12)
        {
            // A sample so small that even a candidate right on every record the serving model gets wrong cannot clear
            // the bound is inconclusive, not evidence that the candidate is worse.
            var needed = MinConclusiveCount(p.Margin, p.Confidence);
            if (p.Count < needed && p.ServingOnlyCorrect == 0)
                return ValueTask.FromResult(GateCheckResult.Fail(Name, string.Create(CultureInfo.InvariantCulture,
                    $"held-out sample too small to conclude: {p.Count} record(s), at least {needed} needed to show non-inferiority at {p.Confidence:P0} within margin {p.Margin:F4}: ") + detail));
            return ValueTask.FromResult(GateCheckResult.Fail(Name, "held-out accuracy is worse beyond the margin: " + detail));
        }
        if (minImprovement > 0 && c - s < minImprovement - 1e-12)
            return ValueTask.FromResult(GateCheckResult.Fail(Name, "held-out metric did not improve enough: " + detail));
        return ValueTask.FromResult(GateCheckResult.Pass(Name, detail));
    }

    /// <summary>The smallest held-out sample on which a candidate right wherever the serving model is wrong can pass.</summary>
    internal static int MinConclusiveCount(double margin, double confidence)
    {
        for (var n = 1; n < 1_000_000; n++)
            if (Compare(n, 0, n, margin, confidence).LowerBound >= -margin - 1e-12) return n;
        return int.MaxValue;
    }

    /// <summary>
    /// The paired comparison: Wilson one-sided lower bound p_L of the candidate's share of discordant pairs, then
    /// (m / n)·(2·p_L − 1) as the lower bound of the accuracy difference.
    /// </summary>
    internal static HeldOutComparison Compare(int n, int servingOnly, int candidateOnly, double margin, double confidence)
    {
        var m = servingOnly + candidateOnly;
        var diff = n == 0 ? 0 : (candidateOnly - servingOnly) / (double)n;
        double lower;
        if (m == 0) lower = 0;
        else
        {
            var z = NormalQuantile(confidence);
            var p = candidateOnly / (double)m;
            var z2 = z * z;
            var centre = (p + z2 / (2 * m)) / (1 + z2 / m);
            var half = z * Math.Sqrt(p * (1 - p) / m + z2 / (4.0 * m * m)) / (1 + z2 / m);
            var pl = Math.Max(0, centre - half);
            lower = m / (double)n * (2 * pl - 1);
        }
        return new HeldOutComparison(n, servingOnly, candidateOnly, diff, lower, margin, confidence);
    }

    /// <summary>The standard normal quantile (Acklam's rational approximation, |error| &lt; 1.2e-9).</summary>
    internal static double NormalQuantile(double p)
    {
        double[] a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00];
        double[] b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01];
        double[] c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00];
        double[] d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
        const double low = 0.02425;
        if (p < low)
        {
            var q = Math.Sqrt(-2 * Math.Log(p));
            return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        }
        if (p > 1 - low)
        {
            var q = Math.Sqrt(-2 * Math.Log(1 - p));
            return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        }
        var r = p - 0.5;
        var s = r * r;
        return (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5]) * r / (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1);
    }
}

/// <summary>
/// Per-class floor: on golden reference plus held-out sample, no class with at least the minimum support may lose
/// more than the per-class tolerance of accuracy (a targeted flip of one class fails even when overall accuracy holds).
/// </summary>
internal sealed class PerClassGate(double tolerance, int minSupport) : IValidationGate
{
    public string Name => "per-class";

    public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken)
    {
        var judged = context.ClassDeltas.Where(d => d.Judged).ToList();
        if (judged.Count == 0)
            return ValueTask.FromResult(GateCheckResult.Pass(Name, $"no class has {minSupport} records yet (golden reference plus held-out sample)"));
        var failed = judged.Where(d => d.Delta < -tolerance - 1e-12).ToList();
        var worst = string.Join(", ", (failed.Count > 0 ? failed : judged).OrderBy(d => d.Delta).Take(5).Select(Describe));
        var detail = string.Create(CultureInfo.InvariantCulture, $"{judged.Count} classes judged (support ≥ {minSupport}, tolerance {tolerance:F4}); worst: {worst}");
        return ValueTask.FromResult(failed.Count == 0
            ? GateCheckResult.Pass(Name, detail)
            : GateCheckResult.Fail(Name, $"{failed.Count} class(es) fell beyond the tolerance: " + detail));
    }

    internal static string Describe(ClassAccuracyDelta d) => string.Create(CultureInfo.InvariantCulture,
        $"{d.Label ?? d.ClassIndex.ToString(CultureInfo.InvariantCulture)} {d.Serving:F3}→{d.Candidate:F3} ({d.Delta:+0.000;-0.000}, n={d.Support})");
}
