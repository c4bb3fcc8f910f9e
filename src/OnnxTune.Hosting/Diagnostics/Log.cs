using OnnxTune.Training.Sessions;
using Microsoft.Extensions.Logging;

namespace OnnxTune.Hosting.Diagnostics;

/// <summary>All OnnxTune.Hosting log messages (event ids 4001-4099).</summary>
internal static partial class Log
{
    [LoggerMessage(4001, LogLevel.Information, "Model '{Model}': feedback rejected ({Kind}, field {Field}): {Reason}")]
    public static partial void FeedbackRejected(ILogger logger, string model, FeedbackErrorKind kind, string field, string reason);

    [LoggerMessage(4002, LogLevel.Information, "Model '{Model}': round {Round} started with {NewCount} new and {ReplayCount} replayed records.")]
    public static partial void RoundStarted(ILogger logger, string model, long round, int newCount, int replayCount);

    [LoggerMessage(4003, LogLevel.Information, "Model '{Model}': round {Round} finished ({Outcome}) in {DurationMs:F0} ms, train loss {TrainLoss}.")]
    public static partial void RoundCompleted(ILogger logger, string model, long round, RoundOutcome outcome, double durationMs, double? trainLoss);

    [LoggerMessage(4004, LogLevel.Information, "Model '{Model}': round {Round} candidate promoted to version {Version}.")]
    public static partial void CandidatePromoted(ILogger logger, string model, long round, int version);

    [LoggerMessage(4005, LogLevel.Warning, "Model '{Model}': round {Round} candidate rejected: {Reasons}")]
    public static partial void CandidateRejected(ILogger logger, string model, long round, string reasons);

    [LoggerMessage(4006, LogLevel.Error, "Model '{Model}': round {Round} failed; the serving model is unchanged.")]
    public static partial void RoundFailed(ILogger logger, string model, long round, Exception exception);

    [LoggerMessage(4007, LogLevel.Information, "Model '{Model}': round {Round} cancelled; no state was kept.")]
    public static partial void RoundCancelled(ILogger logger, string model, long round);

    [LoggerMessage(4008, LogLevel.Information, "Model '{Model}': now serving version {Version} (was {Previous}); swap took {SwapMs:F1} ms.")]
    public static partial void ModelSwapped(ILogger logger, string model, string version, string previous, double swapMs);

    [LoggerMessage(4009, LogLevel.Warning, "Model '{Model}': no fine-tuning engine is registered; serving only, no rounds will run.")]
    public static partial void NoTrainingEngine(ILogger logger, string model);

    [LoggerMessage(4010, LogLevel.Warning, "Model '{Model}': execution provider {Provider} unavailable, falling back to CPU: {Reason}")]
    public static partial void ExecutionProviderFallback(ILogger logger, string model, ExecutionProvider provider, string reason);

    [LoggerMessage(4011, LogLevel.Warning, "Model '{Model}': a handler of event {Event} threw.")]
    public static partial void EventHandlerFailed(ILogger logger, string model, string @event, Exception exception);

    [LoggerMessage(4012, LogLevel.Information, "Model '{Model}': deleted {Count} feedback records older than the retention period.")]
    public static partial void FeedbackPurged(ILogger logger, string model, int count);

    [LoggerMessage(4013, LogLevel.Information, "Model '{Model}': removed old versions {Versions}.")]
    public static partial void VersionsPruned(ILogger logger, string model, string versions);

    [LoggerMessage(4014, LogLevel.Warning, "Model '{Model}': the pointer names a missing version; serving the artifacts' base model '{Path}'.")]
    public static partial void CurrentVersionMissing(ILogger logger, string model, string path);

    [LoggerMessage(4015, LogLevel.Warning, "Model '{Model}': warm-up run of '{Path}' failed ({Reason}); the session is used anyway.")]
    public static partial void WarmUpFailed(ILogger logger, string model, string path, string reason);

    [LoggerMessage(4016, LogLevel.Error, "Model '{Model}': the fine-tuning loop stopped unexpectedly.")]
    public static partial void LoopFailed(ILogger logger, string model, Exception exception);

    // Gate and drift watch (4050-4069).
    [LoggerMessage(4050, LogLevel.Warning, "Model '{Model}': drift watch rolled back version {Version} to {Restored}: {Reason}")]
    public static partial void DriftRollback(ILogger logger, string model, string version, string restored, string reason);

    [LoggerMessage(4051, LogLevel.Error, "Model '{Model}': drift watch could not roll back version {Version}: {Reason}")]
    public static partial void DriftRollbackFailed(ILogger logger, string model, string version, string reason, Exception? exception);

    [LoggerMessage(4052, LogLevel.Warning, "Model '{Model}': drift watch signal on version {Version} (automatic rollback is off): {Reason}")]
    public static partial void DriftDetected(ILogger logger, string model, string version, string reason);

    [LoggerMessage(4055, LogLevel.Warning, "Model '{Model}': drift watch signal on version {Version}, reported without rollback (only the correction rate rolls back unless DriftWatch:RollBackOnDistributionShift/RollBackOnConfidenceDrop is set): {Reason}")]
    public static partial void DriftReported(ILogger logger, string model, string version, string reason);

    [LoggerMessage(4053, LogLevel.Warning, "Model '{Model}': no golden set and no replay set in the artifacts; gates judge candidates on held-out feedback only.")]
    public static partial void NoGoldenReference(ILogger logger, string model);

    [LoggerMessage(4054, LogLevel.Information, "Model '{Model}': round {Round} retries {Retried} records of rejected rounds; {Deferred} records over the user cap ({Share:P0}) wait for a later round.")]
    public static partial void RoundSelection(ILogger logger, string model, long round, int retried, int deferred, double share);
}
