using System.Diagnostics;
using Microsoft.Extensions.Logging;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Diagnostics;

namespace OnnxTune.Hosting.Internal;

/// <summary>Outcome of the latest round, for the health check.</summary>
internal sealed record LastRoundStatus(long Round, RoundOutcome Outcome, DateTimeOffset At, string Summary);

/// <summary>Everything one named model owns at run time: manifest, stores, the swappable session and its handle.</summary>
internal sealed class FineTunedModel : IVersionActivator, IDisposable
{
    private readonly Lock _loadLock = new();
    private readonly InferenceSessionFactory _sessionFactory;
    private volatile LastRoundStatus? _lastRound;
    private volatile string? _loadError;
    private readonly StoreLock _storeLock;

    public FineTunedModel(
        string name,
        OnDeviceFineTuningOptions options,
        IFeedbackStore store,
        FineTuningEvents events,
        OnnxTuneMetrics metrics,
        TimeProvider timeProvider,
        ILogger logger)
    {
        Name = name;
        Options = options;
        // Before anything in the store folder is read or cleaned: one process per store.
        _storeLock = StoreLock.Acquire(Path.Combine(options.ModelStorePath, StoreLockFileName));
        try
        {
            Manifest = ArtifactManifest.Load(options.ArtifactsPath);
        }
        catch
        {
            _storeLock.Dispose();
            throw;
        }
        Schema = new FeedbackSchema(Manifest, options);
        Store = store;
        Events = events;
        Metrics = metrics;
        TimeProvider = timeProvider;
        Logger = logger;
        Versions = new ModelVersionStore(Path.Combine(options.ModelStorePath, "versions"), options.KeepVersions) { Activator = this };
        Sessions = new SwappableInferenceSession();
        _sessionFactory = new InferenceSessionFactory(name, options, logger);
        Handle = new ModelHandle(name, Sessions, EnsureServing, timeProvider);
        Writer = new FeedbackWriter(name, Schema, store, options.HeldOutShare, timeProvider, metrics, logger, Health);
        metrics.RegisterServing(name, () => Sessions.Current?.Version?.Version);
    }

    /// <summary>The lock file of the store folder.</summary>
    public const string StoreLockFileName = "store.lock";

    public string Name { get; }
    public ModelHealth Health { get; } = new();
    public OnDeviceFineTuningOptions Options { get; }
    public ArtifactManifest Manifest { get; }
    public FeedbackSchema Schema { get; }
    public IFeedbackStore Store { get; }
    public ModelVersionStore Versions { get; }
    public SwappableInferenceSession Sessions { get; }
    public ModelHandle Handle { get; }
    public IFeedbackWriter Writer { get; }
    public FineTuningEvents Events { get; }
    public OnnxTuneMetrics Metrics { get; }
    public TimeProvider TimeProvider { get; }
    public ILogger Logger { get; }
    public LastRoundStatus? LastRound { get => _lastRound; set => _lastRound = value; }
    public string? LoadError => _loadError;

    public string BaseModelPath => Path.Combine(Options.ArtifactsPath, Manifest.Files.InferenceModel);
    public string BaseCheckpointPath => Path.Combine(Options.ArtifactsPath, Manifest.Files.Checkpoint);

    /// <summary>Loads the last promoted version (or the base model) if nothing is serving yet.</summary>
    public void EnsureServing()
    {
        if (Sessions.Current is not null) return;
        lock (_loadLock)
        {
            if (Sessions.Current is not null) return;
            try
            {
                var (entry, elapsed) = ServingLoader.Load(this);
                Publish(entry, elapsed);
                _loadError = null;
            }
            catch (Exception e)
            {
                _loadError = e.Message;
                throw e as OnnxTuneException ?? new ModelNotServingException($"Model '{Name}' could not be loaded: {e.Message}", e);
            }
        }
    }

    public SwappableInferenceSession.Entry Prepare(ModelVersionInfo? version, string modelPath, out TimeSpan elapsed)
    {
        var start = Stopwatch.GetTimestamp();
        var session = _sessionFactory.Create(modelPath);
        elapsed = Stopwatch.GetElapsedTime(start);
        return new SwappableInferenceSession.Entry(session, version, modelPath);
    }

    public void Publish(SwappableInferenceSession.Entry entry, TimeSpan prepareTime)
    {
        var start = Stopwatch.GetTimestamp();
        var previous = Sessions.Publish(entry);
        var total = prepareTime + Stopwatch.GetElapsedTime(start);
        Metrics.Swap(Name, total);
        Log.ModelSwapped(Logger, Name, entry.Version?.Version.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "base",
            previous is null ? "none" : previous.Version?.Version.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "base", total.TotalMilliseconds);
        Events.OnModelSwapped(new ModelSwappedEventArgs(Name, previous?.Version?.Version, entry.Version?.Version, total),
            e => Log.EventHandlerFailed(Logger, Name, nameof(FineTuningEvents.ModelSwapped), e));
    }

    /// <summary>Load first, then move the pointer, then publish: a version that cannot load never becomes current.</summary>
    public ValueTask ActivateAsync(ModelVersionInfo version, ModelVersionStore store, CancellationToken cancellationToken)
    {
        var entry = Prepare(version, version.ModelPath, out var elapsed);
        try
        {
            store.SetCurrent(version.Version);
        }
        catch
        {
            entry.Release();
            throw;
        }
        Publish(entry, elapsed);
        return ValueTask.CompletedTask;
    }

    /// <summary>Serves the base model and points <c>current</c> at 0 (every version retired).</summary>
    public ValueTask ActivateBaseAsync(ModelVersionStore store, CancellationToken cancellationToken)
    {
        var entry = Prepare(null, BaseModelPath, out var elapsed);
        try
        {
            store.SetCurrent(0);
        }
        catch
        {
            entry.Release();
            throw;
        }
        Publish(entry, elapsed);
        return ValueTask.CompletedTask;
    }

    public void Dispose()
    {
        Sessions.Dispose();
        Versions.Dispose();
        _storeLock.Dispose();
    }
}
