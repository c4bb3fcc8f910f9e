using System.Diagnostics;
using Microsoft.Extensions.Logging;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Training.Trained;

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
    private readonly Lazy<IReadOnlyList<FeedbackRecord>> _replaySet;
    private bool _trainedBaseVerified;
    private readonly StoreLock _storeLock;

    public FineTunedModel(
        string name,
        OnDeviceFineTuningOptions options,
        IFeedbackStore store,
        FineTuningEvents events,
        OnnxTuneMetrics metrics,
        TimeProvider timeProvider,
        ILogger logger,
        ISharedVersionRegistry? sharedVersions = null)
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
        try
        {
            Versions = new ModelVersionStore(Path.Combine(options.ModelStorePath, "versions"), options.KeepVersions, sharedVersions) { Activator = this };
        }
        catch
        {
            _storeLock.Dispose();
            throw;
        }
        Sessions = new SwappableInferenceSession();
        _sessionFactory = new InferenceSessionFactory(name, options, logger);
        Handle = new ModelHandle(name, Sessions, EnsureServing, timeProvider);
        Writer = new FeedbackWriter(name, Schema, store, options.HeldOutShare, timeProvider, metrics, logger, Health);
        metrics.RegisterServing(name, () => Sessions.Current?.Version?.Version);
        _replaySet = CreateReplaySet();
        if (options.Personalization.Enabled)
        {
            try
            {
                EnablePersonalization(store, sharedVersions);
            }
            catch
            {
                Versions.Dispose();
                _storeLock.Dispose();
                throw;
            }
        }
    }

    private void EnablePersonalization(IFeedbackStore store, ISharedVersionRegistry? sharedVersions)
    {
        var key = (Options.ConfigurationPath ?? OnDeviceFineTuningOptionsValidator.KeyPrefix(Name, OnDeviceFineTuningOptions.DefaultSectionName)) + ":Personalization:Enabled";
        if (store is not IPartitionedFeedbackStore)
            throw new OnnxTuneException($"{key} is true, but the feedback store ({store.GetType().Name}) does not implement IPartitionedFeedbackStore (SqliteFeedbackStore and PostgreSqlFeedbackStore do).");
        if (sharedVersions is not null)
            throw new OnnxTuneException($"{key} is true, but the model uses a shared version registry (several instances): adapters are kept per instance, which is not supported yet.");
        if (Manifest.Loss.Kind != Autodiff.Artifacts.LossKind.CrossEntropy)
            throw new OnnxTuneException($"{key} is true, but the artifacts' loss is {Manifest.Loss.Kind}; adapters train class-index labels with a cross-entropy loss.");
        var root = Path.Combine(Options.ModelStorePath, "personalization");
        AdapterRegistry = new Personalization.AdapterRegistry(Path.Combine(root, "keys"), (file, e) => Log.AdapterStateDamaged(Logger, Name, file, e));
        AdapterBases = new Personalization.AdapterBases(this, Path.Combine(root, "bases"));
        Adapters = new Personalization.AdapterServing(this, AdapterRegistry, AdapterBases);
        Handle.Adapters = Adapters;
    }

    /// <summary>Adapter versions per partition key (null: personalization off).</summary>
    public Personalization.AdapterRegistry? AdapterRegistry { get; private set; }

    /// <summary>LoRA artifacts and adapter-ready bases per shared model (null: personalization off).</summary>
    public Personalization.AdapterBases? AdapterBases { get; private set; }

    /// <summary>Serves keyed predictions with adapters (null: personalization off).</summary>
    public Personalization.AdapterServing? Adapters { get; private set; }

    /// <summary>Runs an adapter round for a key on request (set by the background service when a training engine is registered).</summary>
    public Func<string, CancellationToken, Task<AdapterRoundCompletedEventArgs?>>? AdapterRoundRunner { get; set; }

    /// <summary>The lock file of the store folder.</summary>
    public const string StoreLockFileName = "store.lock";

    public string Name { get; }
    public ModelHealth Health { get; } = new();

    /// <summary>Runs a round on request (set by the background service when a training engine is registered).</summary>
    public Func<CancellationToken, Task<RoundCompletedEventArgs?>>? RoundRunner { get; set; }
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

    /// <summary>The model served before any promotion: the trained folder's model, or the artifacts' inference model.</summary>
    public string BaseModelPath => Options.TrainedModelPath is { Length: > 0 } trained
        ? Path.Combine(trained, TrainedModelFolder.ModelFileName)
        : Path.Combine(Options.ArtifactsPath, Manifest.Files.InferenceModel);

    /// <summary>The checkpoint rounds start from before any promotion.</summary>
    public string BaseCheckpointPath => Options.TrainedModelPath is { Length: > 0 } trained
        ? Path.Combine(trained, TrainedModelFolder.CheckpointFolderName)
        : Path.Combine(Options.ArtifactsPath, Manifest.Files.Checkpoint);

    /// <summary>The replay set file (the base model's own training data), or null when there is none.</summary>
    public string? ReplaySetPath =>
        Options.ReplaySetPath is { Length: > 0 } path ? path
        : new[] { Options.TrainedModelPath, Options.ArtifactsPath }
            .Where(d => d is { Length: > 0 })
            .Select(d => Path.Combine(d!, TrainedModelFolder.ReplaySetFileName))
            .FirstOrDefault(File.Exists)
        ?? (Manifest.Properties.TryGetValue(GoldenReference.ReplayProperty, out var p) && p.Length > 0 && File.Exists(Path.Combine(Options.ArtifactsPath, p))
            ? Path.Combine(Options.ArtifactsPath, p)
            : null);

    /// <summary>The replay set's records (validated like feedback; never held out), read once.</summary>
    public IReadOnlyList<FeedbackRecord> ReplaySet => _replaySet.Value;

    private Lazy<IReadOnlyList<FeedbackRecord>> CreateReplaySet() => new(() =>
    {
        if (ReplaySetPath is not { } path) return [];
        var list = new List<FeedbackRecord>();
        var i = 0;
        foreach (var f in FeedbackJson.ReadGoldenSet(path))
        {
            i++;
            try { list.Add(Schema.ToRecord(f, $"replay-{i}", TimeProvider.GetUtcNow(), 0)); }
            catch (FeedbackValidationException e) { throw new OnnxTuneException($"Replay set '{path}' record {i}: {e.Message}", e); }
        }
        return list;
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    private void VerifyTrainedBase()
    {
        if (_trainedBaseVerified || Options.TrainedModelPath is not { Length: > 0 } trained) return;
        TrainedModelFolder.Verify(trained, Manifest);
        _trainedBaseVerified = true;
    }

    /// <summary>Loads the last promoted version (or the base model) if nothing is serving yet.</summary>
    public void EnsureServing()
    {
        if (Sessions.Current is not null) return;
        lock (_loadLock)
        {
            if (Sessions.Current is not null) return;
            try
            {
                VerifyTrainedBase();
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

    /// <summary>
    /// Serves the version the shared pointer names (0: the base model), read by <paramref name="readShared"/> under
    /// the version lock, so that a read older than a promotion or rollback of this instance can never undo it. The
    /// same load, swap and events as a local promotion, but only the local pointer moves. No-op when it already
    /// serves, when there is no shared pointer, or when the version is not in the local replica yet (the next
    /// synchronisation imports it). Returns the version followed, or null.
    /// </summary>
    public async ValueTask<int?> FollowAsync(Func<int?> readShared, CancellationToken cancellationToken)
    {
        await Versions.LockAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (readShared() is not { } version) return null;
            var serving = Sessions.Current;
            if (serving is not null && (serving.Version?.Version ?? 0) == version) return null;
            ModelVersionInfo? info = null;
            if (version > 0)
            {
                info = Versions.ListVersions().FirstOrDefault(v => v.Version == version);
                if (info is null) return null;
            }
            var entry = Prepare(info, info?.ModelPath ?? BaseModelPath, out var elapsed);
            try
            {
                Versions.SetCurrentLocal(version);
            }
            catch
            {
                entry.Release();
                throw;
            }
            Publish(entry, elapsed);
            return version;
        }
        finally
        {
            Versions.Unlock();
        }
    }

    public void Dispose()
    {
        Adapters?.Dispose();
        Sessions.Dispose();
        Versions.Dispose();
        _storeLock.Dispose();
    }
}
