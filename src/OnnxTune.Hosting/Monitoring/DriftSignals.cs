namespace OnnxTune.Hosting;

/// <summary>A live signal the drift watch compares between a new version and the one it replaced.</summary>
public enum DriftSignal
{
    /// <summary>Users correct the version's predictions more often.</summary>
    CorrectionRate,

    /// <summary>Its predicted-class distribution on recent traffic moved away from the reference distribution.</summary>
    DistributionShift,

    /// <summary>Its mean top-1 confidence fell.</summary>
    Confidence,
}

/// <summary>One version's live signals (counted in this process since it started serving).</summary>
/// <param name="Version">The version (null: the artifacts' base model).</param>
/// <param name="Predictions">Predictions it served through <see cref="IModelHandle.Predict(IReadOnlyDictionary{string, TensorData})"/> (each output row counts).</param>
/// <param name="Corrections">Feedback records that answer one of its predictions with a different label.</param>
/// <param name="CorrectionRate">Corrections per prediction.</param>
/// <param name="DistributionShift">Total-variation distance between its predicted classes over the last window and the reference label distribution (or, without a reference, the previous version's predicted classes); null for the previous version without a reference.</param>
/// <param name="MeanConfidence">Mean top-1 probability over the last window of predictions.</param>
public sealed record VersionLiveSignals(int? Version, long Predictions, long Corrections, double CorrectionRate, double? DistributionShift, double MeanConfidence);

/// <summary>Data of <see cref="FineTuningEvents.DriftDetected"/>.</summary>
public sealed class DriftDetectedEventArgs(
    string modelName, int? version, int? previousVersion, IReadOnlyList<DriftSignal> signals, string reason,
    VersionLiveSignals current, VersionLiveSignals previous, bool rolledBack, TimeSpan sinceSwap) : EventArgs
{
    /// <summary>Gets the model name.</summary>
    public string ModelName { get; } = modelName;
    /// <summary>Gets the version found worse.</summary>
    public int? Version { get; } = version;
    /// <summary>Gets the version it replaced (null: the base model), restored when <see cref="RolledBack"/>.</summary>
    public int? PreviousVersion { get; } = previousVersion;
    /// <summary>Gets the signals that crossed their thresholds.</summary>
    public IReadOnlyList<DriftSignal> Signals { get; } = signals;
    /// <summary>Gets the numbers behind the verdict.</summary>
    public string Reason { get; } = reason;
    /// <summary>Gets the version's signals.</summary>
    public VersionLiveSignals Current { get; } = current;
    /// <summary>Gets the previous version's signals.</summary>
    public VersionLiveSignals Previous { get; } = previous;
    /// <summary>Gets whether the previous version is serving again.</summary>
    public bool RolledBack { get; } = rolledBack;
    /// <summary>Gets the time from the version's swap to the verdict.</summary>
    public TimeSpan SinceSwap { get; } = sinceSwap;
}
