namespace OnnxTune.Hosting;

/// <summary>
/// Decides whether a trained candidate may replace the serving model. The built-in gates always run; app gates
/// are added with <c>AddValidationGate&lt;TGate&gt;()</c>. A candidate is promoted only when every gate passes.
/// </summary>
public interface IValidationGate
{
    /// <summary>Gets the gate's name, recorded in the decision.</summary>
    string Name { get; }

    /// <summary>Checks the candidate.</summary>
    ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken);
}

/// <summary>Metrics of one model on the held-out feedback and the golden set.</summary>
/// <param name="HeldOutMetric">Accuracy (unweighted: record weights never weight the gate) on the held-out sample, or null when there is none.</param>
/// <param name="HeldOutCount">Held-out records evaluated.</param>
/// <param name="GoldenMetric">Accuracy on the golden reference (the golden set, else a sample of the artifacts' replay set), or null when there is none.</param>
/// <param name="GoldenCount">Golden records evaluated.</param>
/// <param name="OutputsFinite">False when any output value was NaN or infinite.</param>
public sealed record EvaluationResult(double? HeldOutMetric, int HeldOutCount, double? GoldenMetric, int GoldenCount, bool OutputsFinite);

/// <summary>Everything a gate may look at.</summary>
public sealed record GateContext
{
    /// <summary>Gets the model name.</summary>
    public required string ModelName { get; init; }

    /// <summary>Gets the round number.</summary>
    public required long Round { get; init; }

    /// <summary>Gets the serving version (null: the artifacts' base model).</summary>
    public int? ServingVersion { get; init; }

    /// <summary>Gets the serving model file.</summary>
    public required string ServingModelPath { get; init; }

    /// <summary>Gets the candidate model file.</summary>
    public required string CandidateModelPath { get; init; }

    /// <summary>Gets the round's final training loss.</summary>
    public required double TrainLoss { get; init; }

    /// <summary>Gets the serving model's metrics.</summary>
    public required EvaluationResult Serving { get; init; }

    /// <summary>Gets the candidate's metrics.</summary>
    public required EvaluationResult Candidate { get; init; }

    /// <summary>Gets whether every floating-point weight of the candidate is finite.</summary>
    public required bool CandidateWeightsFinite { get; init; }

    /// <summary>Gets the golden reference's source and the base and best versions' accuracy on it.</summary>
    public GoldenBaseline? Golden { get; init; }

    /// <summary>Gets the paired comparison of candidate and serving model on the held-out sample (null without held-out records).</summary>
    public HeldOutComparison? HeldOut { get; init; }

    /// <summary>Gets per-class accuracy of serving model and candidate on golden reference plus held-out sample, worst delta first.</summary>
    public IReadOnlyList<ClassAccuracyDelta> ClassDeltas { get; init; } = [];
}

/// <summary>Where the golden reference came from and how the base model and the best kept version score on it.</summary>
/// <param name="Source"><c>golden set</c>, <c>replay set</c> (the artifacts' replay set, sampled) or <c>none</c>.</param>
/// <param name="Count">Records in the reference.</param>
/// <param name="Base">The artifacts' base model's accuracy on it.</param>
/// <param name="Best">The highest accuracy of a kept promoted version on it.</param>
/// <param name="BestVersion">That version.</param>
public sealed record GoldenBaseline(string Source, int Count, double? Base, double? Best, int? BestVersion);

/// <summary>Candidate versus serving model on the same held-out records (see <see cref="GateOptions.HeldOutMargin"/>).</summary>
/// <param name="Count">Held-out records compared.</param>
/// <param name="ServingOnlyCorrect">Records only the serving model classifies correctly.</param>
/// <param name="CandidateOnlyCorrect">Records only the candidate classifies correctly.</param>
/// <param name="Difference">Candidate minus serving accuracy.</param>
/// <param name="LowerBound">One-sided lower confidence bound of the difference.</param>
/// <param name="Margin">The non-inferiority margin.</param>
/// <param name="Confidence">The bound's confidence.</param>
public sealed record HeldOutComparison(int Count, int ServingOnlyCorrect, int CandidateOnlyCorrect, double Difference, double LowerBound, double Margin, double Confidence);

/// <summary>One class's accuracy under the serving model and the candidate, on the records whose true label it is.</summary>
/// <param name="ClassIndex">The class index.</param>
/// <param name="Label">The class name, when known.</param>
/// <param name="Support">Records of the class (golden reference plus held-out sample).</param>
/// <param name="Serving">Serving model accuracy on them.</param>
/// <param name="Candidate">Candidate accuracy on them.</param>
/// <param name="Judged">Whether the class has enough support for the per-class floor.</param>
public sealed record ClassAccuracyDelta(long ClassIndex, string? Label, int Support, double Serving, double Candidate, bool Judged)
{
    /// <summary>Gets candidate minus serving accuracy.</summary>
    public double Delta => Candidate - Serving;
}

/// <summary>One gate's verdict.</summary>
/// <param name="Gate">The gate name.</param>
/// <param name="Passed">Whether the candidate passed.</param>
/// <param name="Detail">The numbers behind the verdict, or the reason for rejection.</param>
public sealed record GateCheckResult(string Gate, bool Passed, string Detail)
{
    /// <summary>A passing result.</summary>
    public static GateCheckResult Pass(string gate, string detail) => new(gate, true, detail);

    /// <summary>A failing result.</summary>
    public static GateCheckResult Fail(string gate, string reason) => new(gate, false, reason);
}

/// <summary>The recorded outcome of gating one candidate (saved as <c>decision.json</c> of a promoted version).</summary>
public sealed record GateDecision
{
    /// <summary>Gets the model name.</summary>
    public required string ModelName { get; init; }

    /// <summary>Gets the round number.</summary>
    public required long Round { get; init; }

    /// <summary>Gets whether the candidate was promoted.</summary>
    public required bool Promoted { get; init; }

    /// <summary>Gets when the decision was made.</summary>
    public required DateTimeOffset DecidedAt { get; init; }

    /// <summary>Gets the version that was serving when the candidate was judged.</summary>
    public int? ServingVersion { get; init; }

    /// <summary>Gets the round's final training loss.</summary>
    public double TrainLoss { get; init; }

    /// <summary>Gets the serving model's metrics.</summary>
    public required EvaluationResult Serving { get; init; }

    /// <summary>Gets the candidate's metrics.</summary>
    public required EvaluationResult Candidate { get; init; }

    /// <summary>Gets every gate's result, built-in gates first.</summary>
    public required IReadOnlyList<GateCheckResult> Checks { get; init; }

    /// <summary>Gets the golden reference's source and baselines.</summary>
    public GoldenBaseline? Golden { get; init; }

    /// <summary>Gets the paired held-out comparison.</summary>
    public HeldOutComparison? HeldOut { get; init; }

    /// <summary>Gets the per-class accuracy deltas, worst first (at most the 10 worst).</summary>
    public IReadOnlyList<ClassAccuracyDelta> ClassDeltas { get; init; } = [];

    /// <summary>Gets warnings about the decision (for example: no golden reference, so only held-out feedback judged).</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>Gets the reasons of the failed gates (empty when promoted).</summary>
    public IReadOnlyList<string> Reasons => Checks.Where(c => !c.Passed).Select(c => $"{c.Gate}: {c.Detail}").ToArray();
}
