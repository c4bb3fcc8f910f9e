using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Extensions.Hosting;
using OnnxTune.Hosting.Diagnostics;

namespace OnnxTune.Hosting.Internal;

/// <summary>Receives every prediction the model handle serves.</summary>
internal interface IPredictionObserver
{
    void Observed(int? version, IReadOnlyDictionary<string, TensorData> outputs);
}

/// <summary>The watch's state for the health check.</summary>
/// <param name="State"><c>disabled</c>, <c>idle</c>, <c>collecting</c>, <c>watching</c>, <c>rolled back</c> or <c>drift detected</c>.</param>
/// <param name="Detail">The numbers behind it.</param>
internal sealed record DriftWatchStatus(string State, string Detail);

/// <summary>
/// Watches the newest promoted version against the version it replaced (see <see cref="DriftWatchOptions"/>): counts
/// predictions per serving version (from the model handle) and corrections per version (feedback whose
/// <see cref="Feedback.Prediction"/> names the version), keeps each version's last <see cref="DriftWatchOptions.Window"/>
/// predicted classes and confidences, and checks the signals every <see cref="DriftWatchOptions.CheckInterval"/> and
/// whenever a correction of the watched version arrives. A crossed threshold rolls back to the previous version (or the
/// base model) and raises <see cref="FineTuningEvents.DriftDetected"/>, the <c>onnxtune.drift.detections</c> metric
/// and log event 4050. Counts live in memory: after a restart the watch waits for the next promotion.
/// </summary>
internal sealed class DriftWatch : BackgroundService, IPredictionObserver
{
    private const int BaseKey = 0;

    private readonly FineTunedModel _model;
    private readonly DriftWatchOptions _options;
    private readonly string? _scoredOutput;
    private readonly ConcurrentDictionary<int, VersionCounters> _counters = new();
    private readonly GoldenReferenceSource _reference;
    private TaskCompletionSource _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile Watched? _watched;
    private readonly HashSet<DriftSignal> _advisoryReported = [];
    private volatile DriftWatchStatus _status;
    private bool _startupSwapPending;
    private readonly SemaphoreSlim _checkLock = new(1, 1);
    private IReadOnlyDictionary<int, double>? _referenceHistogram;
    private string? _referenceSource;
    private (VersionLiveSignals Current, VersionLiveSignals Previous)? _lastSignals;

    public DriftWatch(FineTunedModel model)
    {
        _model = model;
        _options = model.Options.DriftWatch;
        _scoredOutput = model.Manifest.Loss.OutputName;
        _reference = new GoldenReferenceSource(model);
        _status = new DriftWatchStatus(_options.Enabled ? "idle" : "disabled", _options.Enabled ? "no promotion to watch yet" : "DriftWatch:Enabled is false");
        if (!_options.Enabled) return;
        _startupSwapPending = model.Sessions.Current is null;
        model.Handle.Observer = this;
        if (model.Writer is FeedbackWriter writer) writer.Accepted = OnFeedback;
        model.Events.ModelSwapped += OnSwapped;
        model.Metrics.RegisterDrift(model.Name, () => _lastSignals is { } s ? [("watched", s.Current), ("previous", s.Previous)] : []);
    }

    public DriftWatchStatus Status => _status;

    /// <summary>The version under watch and its predecessor (null: the base model).</summary>
    internal sealed record Watched(int Version, int? Previous, DateTimeOffset Since);

    internal Watched? Current => _watched;

    public void Observed(int? version, IReadOnlyDictionary<string, TensorData> outputs)
    {
        try
        {
            var scores = _scoredOutput is not null && outputs.TryGetValue(_scoredOutput, out var t) ? t : outputs.Values.FirstOrDefault(o => o.FloatData is not null);
            if (scores?.FloatData is not { Length: > 0 } data) return;
            var classes = scores.Shape.Count > 0 ? (int)scores.Shape[^1] : data.Length;
            if (classes <= 0 || data.Length % classes != 0) return;
            var counters = CountersOf(version);
            for (var row = 0; row < data.Length / classes; row++)
            {
                var (cls, confidence) = Top1(data.AsSpan(row * classes, classes));
                counters.AddPrediction(cls, confidence);
            }
        }
        catch (Exception e)
        {
            // Observation must never fail a prediction.
            Log.EventHandlerFailed(_model.Logger, _model.Name, "drift watch", e);
        }
    }

    private void OnFeedback(Feedback feedback, FeedbackRecord record)
    {
        if (feedback.Prediction is not { } p) return;
        var correction = true;
        if (p.PredictedLabel is { } predicted)
        {
            try { correction = _model.Schema.ResolveLabel(predicted).Index != record.LabelIndex; }
            catch (FeedbackValidationException) { }
        }
        if (!correction) return;
        CountersOf(p.Version).AddCorrection();
        if (_watched is { } w && w.Version == p.Version) _wake.TrySetResult();
    }

    private void OnSwapped(object? sender, ModelSwappedEventArgs e)
    {
        if (!string.Equals(e.ModelName, _model.Name, StringComparison.Ordinal)) return;
        if (_startupSwapPending)
        {
            _startupSwapPending = false;
            return;
        }
        if (e.Version is { } v && (e.PreviousVersion is null || v > e.PreviousVersion))
        {
            _counters[v] = new VersionCounters(_options.Window);
            _watched = new Watched(v, e.PreviousVersion, _model.TimeProvider.GetUtcNow());
            _lastSignals = null;
            _advisoryReported.Clear();
            _status = new DriftWatchStatus("collecting", Describe(v, e.PreviousVersion, "promoted; collecting live signals"));
        }
        else if (_watched is not null)
        {
            // A rollback (by the app or by this watch) or a reload of an older version: nothing newer to watch.
            _watched = null;
            if (_status.State != "rolled back")
                _status = new DriftWatchStatus("idle", $"now serving {Name(e.Version)} (not a promotion); no version to watch");
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!_options.Enabled) return;
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                var wake = Volatile.Read(ref _wake);
                using (var delay = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken))
                {
                    var timer = Task.Delay(_options.CheckInterval, _model.TimeProvider, delay.Token);
                    await Task.WhenAny(wake.Task, timer).ConfigureAwait(false);
                    await delay.CancelAsync().ConfigureAwait(false);
                }
                stoppingToken.ThrowIfCancellationRequested();
                if (wake.Task.IsCompleted)
                    Interlocked.CompareExchange(ref _wake, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), wake);
                await CheckAsync(stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>Checks the watched version now (after any check in progress); returns the detection, if any.</summary>
    internal async Task<DriftDetectedEventArgs?> CheckAsync(CancellationToken ct)
    {
        await _checkLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            return await CheckOnceAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _checkLock.Release();
        }
    }

    private async Task<DriftDetectedEventArgs?> CheckOnceAsync(CancellationToken ct)
    {
        if (_watched is not { } w) return null;
        var o = _options;
        var cur = CountersOf(w.Version).Take();
        var prev = CountersOf(w.Previous).Take();
        var reference = ReferenceHistogram();
        double? shiftCur, shiftPrev;
        if (reference is not null) (shiftCur, shiftPrev) = (VersionCounters.TotalVariation(cur.Histogram, reference), VersionCounters.TotalVariation(prev.Histogram, reference));
        else (shiftCur, shiftPrev) = (VersionCounters.TotalVariation(cur.Histogram, prev.Histogram), null);
        var current = new VersionLiveSignals(w.Version, cur.Predictions, cur.Corrections, cur.CorrectionRate, shiftCur, cur.MeanConfidence);
        var previous = new VersionLiveSignals(w.Previous, prev.Predictions, prev.Corrections, prev.CorrectionRate, shiftPrev, prev.MeanConfidence);
        _lastSignals = (current, previous);
        var refName = reference is not null ? _referenceSource : "no golden or replay set";
        var numbers = string.Create(CultureInfo.InvariantCulture,
            $"corrections {cur.Corrections}/{cur.Predictions} ({cur.CorrectionRate:P1}) vs {prev.Corrections}/{prev.Predictions} ({prev.CorrectionRate:P1}); " +
            $"distribution shift {shiftCur:F3} vs {(shiftPrev is { } sp ? sp.ToString("F3", CultureInfo.InvariantCulture) : "0 (reference: previous version)")} ({refName}); " +
            $"mean confidence {cur.MeanConfidence:F3} vs {prev.MeanConfidence:F3}");
        if (cur.Predictions < o.MinPredictions || prev.Predictions < o.MinPredictions)
        {
            _status = new DriftWatchStatus("collecting", Describe(w.Version, w.Previous,
                string.Create(CultureInfo.InvariantCulture, $"needs {o.MinPredictions} predictions of both versions; ") + numbers));
            return null;
        }
        var signals = new List<DriftSignal>();
        if (cur.Corrections >= o.MinCorrections && cur.CorrectionRate >= prev.CorrectionRate * o.CorrectionRateRatio &&
            cur.CorrectionRate - prev.CorrectionRate >= o.CorrectionRateIncrease)
            signals.Add(DriftSignal.CorrectionRate);
        if (shiftCur - (shiftPrev ?? 0) > o.MaxDistributionShift) signals.Add(DriftSignal.DistributionShift);
        if (prev.MeanConfidence - cur.MeanConfidence > o.MaxConfidenceDrop) signals.Add(DriftSignal.Confidence);
        // Signals already reported for this version (advisory ones keep it watched) are not raised again.
        signals.RemoveAll(_advisoryReported.Contains);
        if (signals.Count == 0)
        {
            _status = new DriftWatchStatus("watching", Describe(w.Version, w.Previous, "within thresholds; " + numbers));
            return null;
        }

        var reason = $"{string.Join(", ", signals)} crossed: {numbers}";
        var since = _model.TimeProvider.GetUtcNow() - w.Since;
        var rolledBack = false;
        var rollbackWorthy = signals.Any(sig => sig == DriftSignal.CorrectionRate
            || (sig == DriftSignal.DistributionShift && o.RollBackOnDistributionShift)
            || (sig == DriftSignal.Confidence && o.RollBackOnConfidenceDrop));
        if (o.AutoRollback && !rollbackWorthy)
        {
            // Reported, not acted on: the version stays served and watched for the correction rate.
            Log.DriftReported(_model.Logger, _model.Name, Name(w.Version), reason);
            _status = new DriftWatchStatus("watching", Describe(w.Version, w.Previous, "reported (no rollback for this signal): " + reason));
            _advisoryReported.UnionWith(signals);
        }
        else if (o.AutoRollback)
        {
            try
            {
                rolledBack = await RollBackAsync(w, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                Log.DriftRollbackFailed(_model.Logger, _model.Name, Name(w.Version), e.Message, e);
                _status = new DriftWatchStatus("drift detected", Describe(w.Version, w.Previous, $"rollback failed ({e.Message}); {reason}"));
            }
            if (rolledBack)
            {
                Log.DriftRollback(_model.Logger, _model.Name, Name(w.Version), Name(w.Previous), reason);
                _status = new DriftWatchStatus("rolled back", $"{Name(w.Version)} rolled back to {Name(w.Previous)} at {_model.TimeProvider.GetUtcNow():O}: {reason}");
            }
            else if (_status.State != "drift detected")
                return null; // something else swapped meanwhile
        }
        else
        {
            Log.DriftDetected(_model.Logger, _model.Name, Name(w.Version), reason);
            _status = new DriftWatchStatus("drift detected", Describe(w.Version, w.Previous, reason));
            _watched = null;
        }
        _model.Metrics.DriftDetected(_model.Name, signals, rolledBack);
        var args = new DriftDetectedEventArgs(_model.Name, w.Version, w.Previous, signals, reason, current, previous, rolledBack, since);
        _model.Events.OnDriftDetected(args, e => Log.EventHandlerFailed(_model.Logger, _model.Name, nameof(FineTuningEvents.DriftDetected), e));
        return args;
    }

    /// <summary>Restores the previous version (or the base model) if the watched version still serves.</summary>
    private async Task<bool> RollBackAsync(Watched w, CancellationToken ct)
    {
        if (_model.Sessions.Current?.Version?.Version != w.Version) return false;
        _watched = null;
        if (w.Previous is { } previous)
        {
            await _model.Versions.RollbackAsync(previous, ct).ConfigureAwait(false);
            return true;
        }
        var versions = _model.Versions;
        await versions.LockAsync(ct).ConfigureAwait(false);
        try
        {
            if (_model.Sessions.Current?.Version?.Version != w.Version) return false;
            // Load first, then clear the pointer (a restart serves the base model), then publish.
            var entry = _model.Prepare(null, _model.BaseModelPath, out var elapsed);
            try { File.Delete(Path.Combine(versions.Root, ModelVersionStore.CurrentFileName)); }
            catch
            {
                entry.Release();
                throw;
            }
            _model.Publish(entry, elapsed);
            return true;
        }
        finally
        {
            versions.Unlock();
        }
    }

    private IReadOnlyDictionary<int, double>? ReferenceHistogram()
    {
        if (_referenceHistogram is not null) return _referenceHistogram;
        var golden = _reference.Load();
        if (golden.Records.Count == 0) return null;
        _referenceSource = golden.Source;
        return _referenceHistogram = golden.Records.GroupBy(r => (int)r.LabelIndex).ToDictionary(g => g.Key, g => g.Count() / (double)golden.Records.Count);
    }

    private VersionCounters CountersOf(int? version) => _counters.GetOrAdd(version ?? BaseKey, _ => new VersionCounters(_options.Window));

    private static (int Class, float Confidence) Top1(ReadOnlySpan<float> row)
    {
        var best = 0;
        var min = float.PositiveInfinity;
        double sum = 0;
        for (var i = 0; i < row.Length; i++)
        {
            if (row[i] > row[best]) best = i;
            min = Math.Min(min, row[i]);
            sum += row[i];
        }
        // Rows that already are probabilities are used as they are; otherwise softmax.
        if (min >= 0 && Math.Abs(sum - 1) < 1e-3) return (best, row[best]);
        double z = 0;
        for (var i = 0; i < row.Length; i++) z += Math.Exp(row[i] - row[best]);
        return (best, (float)(1 / z));
    }

    private static string Name(int? version) => version is { } v ? "v" + v.ToString(CultureInfo.InvariantCulture) : "base";

    private static string Describe(int version, int? previous, string text) => $"{Name(version)} vs {Name(previous)}: {text}";

    public override void Dispose()
    {
        _model.Events.ModelSwapped -= OnSwapped;
        base.Dispose();
        _checkLock.Dispose();
    }
}
