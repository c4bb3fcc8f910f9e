using Microsoft.Extensions.Logging;

namespace OnnxTune.Hosting.Diagnostics;

/// <summary>Log messages of the store-safety paths (event ids 4070-4089).</summary>
internal static partial class Log
{
    [LoggerMessage(4070, LogLevel.Warning, "Model '{Model}': cannot serve version {Requested} ({Reason}); serving {Served} instead.")]
    public static partial void ServingFallback(ILogger logger, string model, int requested, string served, string reason);

    [LoggerMessage(4071, LogLevel.Warning, "Model '{Model}': feedback record {Sequence} ({Id}) quarantined: {Reason}")]
    public static partial void RecordQuarantined(ILogger logger, string model, long sequence, string id, string reason);

    [LoggerMessage(4072, LogLevel.Error, "Model '{Model}': the fine-tuning loop iteration failed ({Failures} in a row); next check in {DelaySeconds:F1} s.")]
    public static partial void LoopIterationFailed(ILogger logger, string model, int failures, double delaySeconds, Exception exception);

    [LoggerMessage(4073, LogLevel.Warning, "Model '{Model}': round {Round} candidate discarded before promotion: {Reason}")]
    public static partial void CandidateDiscarded(ILogger logger, string model, long round, string reason);

    [LoggerMessage(4074, LogLevel.Warning, "Model '{Model}': pruning old versions met errors: {Errors}")]
    public static partial void PruneErrors(ILogger logger, string model, string errors);

    [LoggerMessage(4075, LogLevel.Warning, "Model '{Model}': removed version folders {Versions} that were written but never promoted (interrupted promotion).")]
    public static partial void OrphansRemoved(ILogger logger, string model, string versions);

    [LoggerMessage(4076, LogLevel.Information, "Model '{Model}': training watermark reconciled from {Old} to {New} (version {Version} was promoted but the watermark write was interrupted).")]
    public static partial void WatermarkReconciled(ILogger logger, string model, long old, long @new, int version);

    [LoggerMessage(4077, LogLevel.Warning, "Model '{Model}': version {Version} retired: {Reason}")]
    public static partial void VersionRetired(ILogger logger, string model, int version, string reason);
}
