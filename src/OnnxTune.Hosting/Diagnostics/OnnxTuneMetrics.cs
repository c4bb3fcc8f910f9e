using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace OnnxTune.Hosting.Diagnostics;

/// <summary>The "OnnxTune" meter's instruments; every measurement carries the model name as tag <c>onnxtune.model</c>.</summary>
internal sealed class OnnxTuneMetrics : IDisposable
{
    public const string MeterName = "OnnxTune";
    private const string ModelTag = "onnxtune.model";

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly Counter<long> _feedbackAccepted;
    private readonly Counter<long> _feedbackRejected;
    private readonly Counter<long> _rounds;
    private readonly Counter<long> _promotions;
    private readonly Counter<long> _rejections;
    private readonly Histogram<double> _trainLoss;
    private readonly Histogram<double> _gateMetric;
    private readonly Histogram<double> _swapDuration;
    private readonly Histogram<double> _roundDuration;
    private readonly ConcurrentDictionary<string, Func<int?>> _serving = new(StringComparer.Ordinal);
    private readonly Counter<long> _driftDetections;
    private readonly Counter<long> _roundRecords;
    private readonly ConcurrentDictionary<string, Func<IReadOnlyList<(string Role, VersionLiveSignals Signals)>>> _drift = new(StringComparer.Ordinal);

    public OnnxTuneMetrics(IMeterFactory? meterFactory)
    {
        _ownsMeter = meterFactory is null;
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _feedbackAccepted = _meter.CreateCounter<long>("onnxtune.feedback.accepted", "{record}", "Feedback records durably stored.");
        _feedbackRejected = _meter.CreateCounter<long>("onnxtune.feedback.rejected", "{record}", "Feedback records rejected by validation.");
        _rounds = _meter.CreateCounter<long>("onnxtune.rounds", "{round}", "Fine-tuning rounds by outcome.");
        _promotions = _meter.CreateCounter<long>("onnxtune.promotions", "{version}", "Candidates promoted to serving.");
        _rejections = _meter.CreateCounter<long>("onnxtune.rejections", "{candidate}", "Candidates rejected by the gate.");
        _trainLoss = _meter.CreateHistogram<double>("onnxtune.train.loss", null, "Final training loss of a round.");
        _gateMetric = _meter.CreateHistogram<double>("onnxtune.gate.metric", null, "Gate metrics of serving and candidate models.");
        _swapDuration = _meter.CreateHistogram<double>("onnxtune.swap.duration", "ms", "Time to load, warm up and publish a session.");
        _roundDuration = _meter.CreateHistogram<double>("onnxtune.round.duration", "s", "Round wall time.");
        _meter.CreateObservableGauge("onnxtune.serving.version", ObserveServing, "{version}", "Serving version (0: base model).");
        _roundRecords = _meter.CreateCounter<long>("onnxtune.round.records", "{record}", "Records of rounds by fate (onnxtune.fate: retried, deferred, confirmed, pending).");
        _driftDetections = _meter.CreateCounter<long>("onnxtune.drift.detections", "{detection}", "Versions the drift watch found worse than their predecessor (tag onnxtune.rolled_back).");
        _meter.CreateObservableGauge("onnxtune.drift.correction_rate", () => ObserveDrift(s => s.CorrectionRate), "{correction}/{prediction}", "Corrections per prediction of the watched and the previous version.");
        _meter.CreateObservableGauge("onnxtune.drift.distribution_shift", () => ObserveDrift(s => s.DistributionShift ?? 0), null, "Total-variation distance of predicted classes from the reference distribution.");
        _meter.CreateObservableGauge("onnxtune.drift.confidence", () => ObserveDrift(s => s.MeanConfidence), null, "Mean top-1 confidence over the watch window.");
    }

    public void RegisterServing(string model, Func<int?> version) => _serving[model] = version;

    public void FeedbackAccepted(string model, bool heldOut) =>
        _feedbackAccepted.Add(1, new(ModelTag, model), new("onnxtune.held_out", heldOut));

    public void FeedbackRejected(string model, FeedbackErrorKind kind) =>
        _feedbackRejected.Add(1, new(ModelTag, model), new("onnxtune.reason", kind.ToString()));

    public void Round(string model, RoundOutcome outcome, TimeSpan duration)
    {
        _rounds.Add(1, new(ModelTag, model), new("onnxtune.outcome", outcome.ToString()));
        _roundDuration.Record(duration.TotalSeconds, new KeyValuePair<string, object?>(ModelTag, model));
    }

    public void Promotion(string model) => _promotions.Add(1, new KeyValuePair<string, object?>(ModelTag, model));

    public void Rejection(string model) => _rejections.Add(1, new KeyValuePair<string, object?>(ModelTag, model));

    public void TrainLoss(string model, double loss) => _trainLoss.Record(loss, new KeyValuePair<string, object?>(ModelTag, model));

    public void GateMetric(string model, string metric, string which, double value) =>
        _gateMetric.Record(value, new(ModelTag, model), new("onnxtune.metric", metric), new("onnxtune.model_role", which));

    public void Swap(string model, TimeSpan duration) => _swapDuration.Record(duration.TotalMilliseconds, new KeyValuePair<string, object?>(ModelTag, model));

    public void RoundRecords(string model, string fate, long count)
    {
        if (count > 0) _roundRecords.Add(count, new(ModelTag, model), new("onnxtune.fate", fate));
    }

    public void RegisterDrift(string model, Func<IReadOnlyList<(string Role, VersionLiveSignals Signals)>> signals) => _drift[model] = signals;

    public void DriftDetected(string model, IReadOnlyList<DriftSignal> signals, bool rolledBack) =>
        _driftDetections.Add(1, new(ModelTag, model), new("onnxtune.signal", string.Join(",", signals)), new("onnxtune.rolled_back", rolledBack));

    private IEnumerable<Measurement<double>> ObserveDrift(Func<VersionLiveSignals, double> value)
    {
        foreach (var (model, signals) in _drift)
            foreach (var (role, s) in signals())
                yield return new Measurement<double>(value(s), new(ModelTag, model), new("onnxtune.model_role", role), new("onnxtune.version", s.Version ?? 0));
    }

    private IEnumerable<Measurement<long>> ObserveServing()
    {
        foreach (var (model, version) in _serving)
            yield return new Measurement<long>(version() ?? 0, new KeyValuePair<string, object?>(ModelTag, model));
    }

    public void Dispose()
    {
        if (_ownsMeter) _meter.Dispose();
    }
}
