namespace OnnxTune.Hosting;

/// <summary>How a fine-tuning round ended.</summary>
public enum RoundOutcome
{
    /// <summary>The candidate passed the gate and is serving.</summary>
    Promoted,
    /// <summary>The candidate failed the gate; the serving model is unchanged.</summary>
    Rejected,
    /// <summary>The round threw; the serving model is unchanged.</summary>
    Failed,
}

/// <summary>Data of <see cref="FineTuningEvents.RoundCompleted"/>.</summary>
public sealed class RoundCompletedEventArgs(string modelName, long round, RoundOutcome outcome, TimeSpan duration, GateDecision? decision, Exception? error) : EventArgs
{
    /// <summary>Gets the model name.</summary>
    public string ModelName { get; } = modelName;
    /// <summary>Gets the round number.</summary>
    public long Round { get; } = round;
    /// <summary>Gets the outcome.</summary>
    public RoundOutcome Outcome { get; } = outcome;
    /// <summary>Gets the round's wall time.</summary>
    public TimeSpan Duration { get; } = duration;
    /// <summary>Gets the gate decision (null when the round failed before gating).</summary>
    public GateDecision? Decision { get; } = decision;
    /// <summary>Gets the failure (only for <see cref="RoundOutcome.Failed"/>).</summary>
    public Exception? Error { get; } = error;
    /// <summary>Gets the round's record and step counts, per-epoch losses and timings (partial when it failed early).</summary>
    public RoundStatistics Statistics { get; init; } = new();
}

/// <summary>Data of <see cref="FineTuningEvents.CandidateRejected"/>.</summary>
public sealed class CandidateRejectedEventArgs(GateDecision decision) : EventArgs
{
    /// <summary>Gets the decision with its metrics and reasons.</summary>
    public GateDecision Decision { get; } = decision;
}

/// <summary>Data of <see cref="FineTuningEvents.ModelSwapped"/>.</summary>
public sealed class ModelSwappedEventArgs(string modelName, int? previousVersion, int? version, TimeSpan swapDuration) : EventArgs
{
    /// <summary>Gets the model name.</summary>
    public string ModelName { get; } = modelName;
    /// <summary>Gets the version served before (null: base model or none).</summary>
    public int? PreviousVersion { get; } = previousVersion;
    /// <summary>Gets the version now serving (null: base model).</summary>
    public int? Version { get; } = version;
    /// <summary>Gets the time to load, warm up and publish the new session.</summary>
    public TimeSpan SwapDuration { get; } = swapDuration;
}

/// <summary>Data of <see cref="FineTuningEvents.ServingFallback"/>.</summary>
public sealed class ServingFallbackEventArgs(string modelName, int requestedVersion, int? servedVersion, string reason) : EventArgs
{
    /// <summary>Gets the model name.</summary>
    public string ModelName { get; } = modelName;
    /// <summary>Gets the version the <c>current</c> pointer names.</summary>
    public int RequestedVersion { get; } = requestedVersion;
    /// <summary>Gets the version served instead (null: the artifacts' base model).</summary>
    public int? ServedVersion { get; } = servedVersion;
    /// <summary>Gets why the requested version could not be served.</summary>
    public string Reason { get; } = reason;
}

/// <summary>
/// Events of all fine-tuned models in the app (inject it to subscribe). Handlers run on the background
/// thread that raised them; exceptions they throw are logged and ignored.
/// </summary>
public sealed class FineTuningEvents
{
    /// <summary>Raised after every round, whatever its outcome.</summary>
    public event EventHandler<RoundCompletedEventArgs>? RoundCompleted;

    /// <summary>Raised when the gate rejects a candidate.</summary>
    public event EventHandler<CandidateRejectedEventArgs>? CandidateRejected;

    /// <summary>Raised after a new session was published (promotion, rollback or start-up).</summary>
    public event EventHandler<ModelSwappedEventArgs>? ModelSwapped;

    /// <summary>Raised when start-up could not serve the version the pointer names and served an older one (or the base model).</summary>
    public event EventHandler<ServingFallbackEventArgs>? ServingFallback;

    internal void OnServingFallback(ServingFallbackEventArgs e, Action<Exception> onError) => Raise(ServingFallback, e, onError);

    /// <summary>Raised when the drift watch finds the newest version worse than its predecessor on live signals (and rolled it back unless AutoRollback is off).</summary>
    public event EventHandler<DriftDetectedEventArgs>? DriftDetected;

    internal void OnDriftDetected(DriftDetectedEventArgs e, Action<Exception> onError) => Raise(DriftDetected, e, onError);

    /// <summary>Raised after every adapter round of a partition key (personalization), promoted, rejected or failed.</summary>
    public event EventHandler<AdapterRoundCompletedEventArgs>? AdapterRoundCompleted;

    internal void OnAdapterRoundCompleted(AdapterRoundCompletedEventArgs e, Action<Exception> onError) => Raise(AdapterRoundCompleted, e, onError);

    internal void OnRoundCompleted(RoundCompletedEventArgs e, Action<Exception> onError) => Raise(RoundCompleted, e, onError);

    internal void OnCandidateRejected(CandidateRejectedEventArgs e, Action<Exception> onError) => Raise(CandidateRejected, e, onError);

    internal void OnModelSwapped(ModelSwappedEventArgs e, Action<Exception> onError) => Raise(ModelSwapped, e, onError);

    private void Raise<T>(EventHandler<T>? handler, T args, Action<Exception> onError)
    {
        if (handler is null) return;
        foreach (var d in handler.GetInvocationList())
        {
            try { ((EventHandler<T>)d)(this, args); }
            catch (Exception e) { onError(e); }
        }
    }
}
