using System.Globalization;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting.Diagnostics;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Builds the gate's context for one candidate: a bounded held-out sample, the golden reference, predictions of
/// serving model and candidate on both (one evaluator call each, batched), the base and best kept versions' golden
/// accuracy, the paired held-out comparison and per-class deltas. Predictions of models that do not change (the base
/// model, kept versions, the serving model between rounds) are cached per record, so a rejected round's successor
/// scores only new records with the serving model.
/// </summary>
internal sealed class GateEvaluation(FineTunedModel model, IModelEvaluator evaluator)
{
    internal const int ReportedClassDeltas = 10;
    private const int MaxCachedModels = 16;

    private readonly Dictionary<string, CachedModel> _cache = new(StringComparer.Ordinal);
    private readonly GoldenReferenceSource _golden = new(model);
    private long _clock;
    private bool _warnedNoGolden;

    public GoldenReferenceSource Golden => _golden;

    public async Task<(GateContext Context, IReadOnlyList<string> Warnings)> BuildAsync(
        long round, int? servingVersion, string servingModel, string candidateModel, double trainLoss, long upTo, CancellationToken ct)
    {
        var g = model.Options.Gate;
        var heldOut = await HeldOutSampleAsync(upTo, ct).ConfigureAwait(false);
        var golden = _golden.Load();
        var warnings = new List<string>();
        if (golden.Records.Count == 0)
        {
            warnings.Add(GoldenSetGate.NoReference);
            if (!_warnedNoGolden) Log.NoGoldenReference(model.Logger, model.Name);
            _warnedNoGolden = true;
        }
        var all = heldOut.Concat(golden.Records).ToList();
        var serving = PredictCached(servingModel, all, ct);
        var candidate = evaluator.Predict(candidateModel, all, ct);
        var servingEval = Evaluate(all, heldOut.Count, serving);
        var candidateEval = Evaluate(all, heldOut.Count, candidate);

        GoldenBaseline? baseline = null;
        if (golden.Records.Count > 0)
        {
            var baseAcc = Path.GetFullPath(servingModel) == Path.GetFullPath(model.BaseModelPath)
                ? servingEval.GoldenMetric
                : Accuracy(golden.Records, PredictCached(model.BaseModelPath, golden.Records, ct).Predicted, 0, golden.Records.Count);
            double? best = null;
            int? bestVersion = null;
            foreach (var v in model.Versions.ListVersions())
            {
                var acc = Accuracy(golden.Records, PredictCached(v.ModelPath, golden.Records, ct).Predicted, 0, golden.Records.Count);
                if (acc is { } a && (best is null || a > best)) (best, bestVersion) = (a, v.Version);
            }
            baseline = new GoldenBaseline(golden.Source, golden.Records.Count, baseAcc, best, bestVersion);
        }

        HeldOutComparison? comparison = null;
        if (heldOut.Count > 0)
        {
            int servingOnly = 0, candidateOnly = 0;
            for (var i = 0; i < heldOut.Count; i++)
            {
                var s = serving.Predicted[i] == heldOut[i].LabelIndex;
                var c = candidate.Predicted[i] == heldOut[i].LabelIndex;
                if (s && !c) servingOnly++;
                else if (c && !s) candidateOnly++;
            }
            comparison = HeldOutGate.Compare(heldOut.Count, servingOnly, candidateOnly, g.HeldOutMargin, g.HeldOutConfidence);
        }

        var context = new GateContext
        {
            ModelName = model.Name,
            Round = round,
            ServingVersion = servingVersion,
            ServingModelPath = servingModel,
            CandidateModelPath = candidateModel,
            TrainLoss = trainLoss,
            Serving = servingEval,
            Candidate = candidateEval,
            CandidateWeightsFinite = evaluator.WeightsFinite(candidateModel),
            Golden = baseline,
            HeldOut = comparison,
            ClassDeltas = ClassDeltas(all, serving.Predicted, candidate.Predicted, g.PerClassMinSupport),
        };
        return (context, warnings);
    }

    private async Task<IReadOnlyList<FeedbackRecord>> HeldOutSampleAsync(long upTo, CancellationToken ct)
    {
        var g = model.Options.Gate;
        if (model.Store is IRoundLedger ledger)
            return await ledger.GetHeldOutSampleAsync(upTo, g.HeldOutSampleRecent, g.HeldOutSampleOlder, seed: 0, ct).ConfigureAwait(false);
        var all = await model.Store.GetHeldOutAsync(upTo, ct).ConfigureAwait(false);
        var split = Math.Max(0, all.Count - g.HeldOutSampleRecent);
        return [.. StratifiedSample.Take(all.Take(split).ToList(), r => r.LabelIndex, g.HeldOutSampleOlder, 0), .. all.Skip(split)];
    }

    private static EvaluationResult Evaluate(IReadOnlyList<FeedbackRecord> all, int heldOutCount, ModelPredictions p) =>
        new(Accuracy(all, p.Predicted, 0, heldOutCount), heldOutCount, Accuracy(all, p.Predicted, heldOutCount, all.Count), all.Count - heldOutCount, p.OutputsFinite);

    /// <summary>Unweighted accuracy of records [from, to): record weights never weight the gate.</summary>
    private static double? Accuracy(IReadOnlyList<FeedbackRecord> records, int[] predicted, int from, int to)
    {
        if (to <= from) return null;
        var correct = 0;
        for (var i = from; i < to; i++) if (predicted[i] == records[i].LabelIndex) correct++;
        return correct / (double)(to - from);
    }

    private List<ClassAccuracyDelta> ClassDeltas(IReadOnlyList<FeedbackRecord> records, int[] serving, int[] candidate, int minSupport)
    {
        var stats = new Dictionary<long, (int N, int S, int C)>();
        for (var i = 0; i < records.Count; i++)
        {
            var label = records[i].LabelIndex;
            stats.TryGetValue(label, out var t);
            stats[label] = (t.N + 1, t.S + (serving[i] == label ? 1 : 0), t.C + (candidate[i] == label ? 1 : 0));
        }
        var labels = model.Schema.Labels;
        return stats.Select(kv => new ClassAccuracyDelta(kv.Key, labels is not null && kv.Key < labels.Count ? labels[(int)kv.Key] : null, kv.Value.N,
                kv.Value.S / (double)kv.Value.N, kv.Value.C / (double)kv.Value.N, kv.Value.N >= minSupport))
            .OrderBy(d => d.Judged ? 0 : 1).ThenBy(d => d.Delta).ThenBy(d => d.ClassIndex).ToList();
    }

    /// <summary>Predictions of an unchanging model file, scoring only records it has not scored before.</summary>
    private ModelPredictions PredictCached(string modelPath, IReadOnlyList<FeedbackRecord> records, CancellationToken ct)
    {
        var info = new FileInfo(modelPath);
        var key = string.Create(CultureInfo.InvariantCulture, $"{info.FullName}|{(info.Exists ? info.LastWriteTimeUtc.Ticks : 0)}|{(info.Exists ? info.Length : 0)}");
        if (!_cache.TryGetValue(key, out var entry))
        {
            if (_cache.Count >= MaxCachedModels) _cache.Remove(_cache.MinBy(kv => kv.Value.LastUse).Key);
            _cache[key] = entry = new CachedModel();
        }
        entry.LastUse = ++_clock;
        var missing = records.Where(r => !entry.Predicted.ContainsKey(r.Id)).DistinctBy(r => r.Id).ToList();
        if (missing.Count > 0)
        {
            var p = evaluator.Predict(modelPath, missing, ct);
            entry.Finite &= p.OutputsFinite;
            for (var i = 0; i < missing.Count; i++) entry.Predicted[missing[i].Id] = p.Predicted[i];
        }
        var result = new int[records.Count];
        for (var i = 0; i < records.Count; i++) result[i] = entry.Predicted[records[i].Id];
        // Bound memory: forget records that left the samples.
        if (entry.Predicted.Count > 4 * Math.Max(records.Count, 1024))
        {
            var keep = records.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
            foreach (var id in entry.Predicted.Keys.Where(id => !keep.Contains(id)).ToList()) entry.Predicted.Remove(id);
        }
        return new ModelPredictions(result, entry.Finite);
    }

    private sealed class CachedModel
    {
        public Dictionary<string, int> Predicted { get; } = new(StringComparer.Ordinal);
        public bool Finite { get; set; } = true;
        public long LastUse { get; set; }
    }
}
