namespace OnnxTune.Hosting.Internal;

/// <summary>
/// What the health check reports beyond "is a session serving": the loop's state, consecutive failed rounds,
/// the last store failure (feedback cannot be stored), and a start that served an older version than the pointer
/// names. Written by the background service, the writer and the model; read by the health check.
/// </summary>
internal sealed class ModelHealth
{
    private readonly Lock _lock = new();
    private string? _loopStopped;
    private string? _loopError;
    private int _consecutiveFailedRounds;
    private string? _lastRoundFailure;
    private FeedbackStoreException? _storeError;
    private string? _servingFallback;

    /// <summary>Rounds failing in a row from which the model is reported Unhealthy (it still serves, but learns nothing).</summary>
    public const int UnhealthyFailedRounds = 5;

    public string? LoopStopped { get { lock (_lock) return _loopStopped; } }
    public string? LoopError { get { lock (_lock) return _loopError; } }
    public int ConsecutiveFailedRounds { get { lock (_lock) return _consecutiveFailedRounds; } }
    public string? LastRoundFailure { get { lock (_lock) return _lastRoundFailure; } }
    public FeedbackStoreException? StoreError { get { lock (_lock) return _storeError; } }
    public string? ServingFallback { get { lock (_lock) return _servingFallback; } }

    public void OnLoopStopped(string reason) { lock (_lock) _loopStopped ??= reason; }
    public void OnLoopError(Exception e) { lock (_lock) _loopError = Describe(e); }
    public void OnLoopOk() { lock (_lock) _loopError = null; }

    public void OnRoundFailed(Exception? e)
    {
        lock (_lock)
        {
            _consecutiveFailedRounds++;
            _lastRoundFailure = e is null ? "unknown error" : Describe(e);
        }
    }

    private static string Describe(Exception e) =>
        e is FeedbackStoreException f ? $"feedback store {f.Kind} ({f.Operation}): {f.Message}" : $"{e.GetType().Name}: {e.Message}";

    public void OnRoundFinished()
    {
        lock (_lock)
        {
            _consecutiveFailedRounds = 0;
            _lastRoundFailure = null;
        }
    }

    /// <summary>Records a failed feedback write (the writer clears it on the next success): feedback is being lost.</summary>
    public void OnStoreFailure(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
            if (x is FeedbackStoreException f)
            {
                lock (_lock) _storeError = f;
                return;
            }
    }

    public void OnStoreOk() { lock (_lock) _storeError = null; }

    public void OnServingFallback(string? message) { lock (_lock) _servingFallback = message; }
}
