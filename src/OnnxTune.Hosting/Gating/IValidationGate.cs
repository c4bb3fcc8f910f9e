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
/// <param name="HeldOutMetric">Weighted accuracy on held-out feedback, or null when there is none.</param>
/// <param name="HeldOutCount">Held-out records evaluated.</param>
/// <param name="GoldenMetric">Accuracy on the golden set, or null when there is none.</param>
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

    /// <summary>Gets the reasons of the failed gates (empty when promoted).</summary>
    public IReadOnlyList<string> Reasons => Checks.Where(c => !c.Passed).Select(c => $"{c.Gate}: {c.Detail}").ToArray();
}
