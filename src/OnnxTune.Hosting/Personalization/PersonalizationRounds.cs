using System.Diagnostics;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.Training;

namespace OnnxTune.Hosting.Personalization;

/// <summary>
/// Adapter rounds, one partition key at a time, run by the background loop after the shared round (under the same
/// round lock): a key is due when it has <see cref="PersonalizationOptions.MinNewFeedback"/> training records and
/// that many new ones since its last adapter round, or when the shared model changed under its adapter. A round
/// trains a fresh adapter on the serving shared model from the key's records (plus a class-balanced replay sample),
/// gates it against the shared model on the key's held-out records (not worse) and on a golden sample of the classes
/// the key does not relabel (at most
/// <see cref="PersonalizationOptions.MaxGoldenDrop"/> lower), and promotes it under the version lock when the shared
/// version it was trained on still serves and none of its records was deleted.
/// </summary>
internal sealed partial class PersonalizationRounds(FineTunedModel model, IFineTuningRound engine, IModelEvaluator evaluator, string roundsRoot)
{
    private readonly GoldenReferenceSource _golden = new(model);

    private PersonalizationOptions Options => model.Options.Personalization;
    private ILogger Logger => model.Logger;
    private IFeedbackMaintenance? Maintenance => model.Store as IFeedbackMaintenance;

    /// <summary>Runs the due keys' rounds (at most <see cref="PersonalizationOptions.MaxRoundsPerCheck"/>); returns how many ran.</summary>
    public async Task<int> RunDueAsync(CancellationToken ct)
    {
        if (model.Store is not IPartitionedFeedbackStore store || model.Sessions.Current is not { } serving) return 0;
        var fingerprint = model.AdapterBases!.Fingerprint(serving.ModelPath);
        var upTo = await model.Store.GetLatestSequenceAsync(ct).ConfigureAwait(false);
        var due = new List<(string Key, long Since)>();
        foreach (var p in await store.GetPartitionsAsync(upTo, ct).ConfigureAwait(false))
            if (IsDue(p, model.AdapterRegistry!.Get(p.PartitionKey), fingerprint, Options.MinNewFeedback))
                due.Add((p.PartitionKey, model.AdapterRegistry.Get(p.PartitionKey)?.AttemptedThroughSequence ?? 0));
        var ran = 0;
        // Longest-waiting keys first, so that a busy key cannot starve the others.
        foreach (var (key, _) in due.OrderBy(d => d.Since).ThenBy(d => d.Key, StringComparer.Ordinal).Take(Options.MaxRoundsPerCheck))
        {
            ct.ThrowIfCancellationRequested();
            await RunKeyAsync(key, ct).ConfigureAwait(false);
            ran++;
        }
        return ran;
    }

    internal static bool IsDue(PartitionSummary p, AdapterKeyState? state, string servingFingerprint, int minNew)
    {
        if (p.TrainingRecords < minNew) return false;
        if (state is null) return true;
        if (!string.Equals(state.AttemptedBaseFingerprint, servingFingerprint, StringComparison.Ordinal))
            return state.Serving is not null || p.LatestSequence > state.AttemptedThroughSequence;
        return p.LatestSequence > state.AttemptedThroughSequence && p.TrainingRecords - state.AttemptedTrainingRecords >= minNew;
    }

    /// <summary>One adapter round for <paramref name="key"/>; null when the key has no usable training record.</summary>
    public async Task<AdapterRoundCompletedEventArgs?> RunKeyAsync(string key, CancellationToken ct)
    {
        var start = Stopwatch.GetTimestamp();
        var registry = model.AdapterRegistry!;
        var bases = model.AdapterBases!;
        model.EnsureServing();
        var serving = model.Sessions.Current ?? throw new ModelNotServingException($"Model '{model.Name}' serves no model.");
        var fingerprint = bases.Fingerprint(serving.ModelPath);
        var upTo = await model.Store.GetLatestSequenceAsync(ct).ConfigureAwait(false);
        var records = await ((IPartitionedFeedbackStore)model.Store).GetPartitionAsync(key, upTo, Options.MaxRecordsPerRound, ct).ConfigureAwait(false);
        var usable = records.Where(Usable).ToList();
        var train = usable.Where(r => !r.HeldOut).ToList();
        var heldOut = usable.Where(r => r.HeldOut).ToList();
        if (train.Count == 0) return null;
        var latest = records.Max(r => r.Sequence);
        var prior = registry.Get(key);
        var attempt = (prior?.NextVersion ?? 1) + (prior?.AttemptedThroughSequence ?? 0);
        var work = Path.Combine(roundsRoot, $"adapter-{Guid.NewGuid():N}");
        AdapterRoundCompletedEventArgs completed;
        try
        {
            Directory.CreateDirectory(work);
            var adapterBase = await Task.Run(() => bases.Ensure(serving.ModelPath), ct).ConfigureAwait(false);
            // The key's own conventions may relabel some classes (the shared model says c, the key says otherwise): replay
            // and golden records of those classes would contradict it; the others keep the adapter honest.
            var sharedOnTrain = evaluator.Predict(serving.ModelPath, train, ct).Predicted;
            var relabeled = new HashSet<long>();
            for (var i = 0; i < train.Count; i++)
                if (sharedOnTrain[i] != train[i].LabelIndex) relabeled.Add(sharedOnTrain[i]);
            var replay = ReplaySampler.ClassBalanced([.. model.ReplaySet.Where(r => !relabeled.Contains(r.LabelIndex))],
                (int)Math.Ceiling(train.Count * Options.ReplayRatio), unchecked((int)latest));
            var adapterFile = Path.Combine(work, "adapter.onnx_adapter");
            LogAdapterRoundStarted(Logger, model.Name, train.Count, heldOut.Count, replay.Count);
            var result = await engine.RunAsync(new FineTuningRoundInput(
                model.Name, attempt, adapterBase.ArtifactsPath, adapterBase.Manifest, serving.ModelPath, adapterBase.InitialCheckpointPath,
                train, replay, Options.EpochsPerRound, Options.BatchSize, Options.LearningRate, model.Options.TrainingThreads, work)
            {
                WarmupFraction = model.Options.WarmupFraction,
                DistillationWeight = model.Options.DistillationWeight,
                TrainingNiceness = model.Options.TrainingNiceness,
                TrainingIdlePriority = model.Options.UsesIdleTrainingPriority(),
                PrefixCacheDirectory = model.Options.UsePrefixCache ? adapterBase.PrefixCachePath : null,
                AdapterPath = adapterFile,
                RecordFailed = (_, _) => { },
            }, ct).ConfigureAwait(false);
            completed = await GateAndPromoteAsync(key, serving, fingerprint, result, adapterFile, train, heldOut, relabeled, start, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e)
        {
            LogAdapterRoundFailed(Logger, model.Name, e);
            completed = new AdapterRoundCompletedEventArgs(model.Name, key, RoundOutcome.Failed, Stopwatch.GetElapsedTime(start), [$"{e.GetType().Name}: {e.Message}"]);
        }
        finally
        {
            try { if (Directory.Exists(work)) Directory.Delete(work, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        // Rejected or failed data is not retried until the key has new records (or the shared model changes).
        try
        {
            registry.RecordAttempt(key, latest, records.Count(r => !r.HeldOut), fingerprint);
            // LoRA artifacts of shared models no adapter serves on any more are hundreds of MB each: keep the newest few.
            bases.Prune(registry.All().Select(s => s.Serving?.BaseFingerprint).OfType<string>().Append(fingerprint).ToHashSet(StringComparer.Ordinal));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { LogAdapterRoundFailed(Logger, model.Name, e); }
        model.Events.OnAdapterRoundCompleted(completed, e => Log.EventHandlerFailed(Logger, model.Name, nameof(FineTuningEvents.AdapterRoundCompleted), e));
        return completed;
    }

    private async Task<AdapterRoundCompletedEventArgs> GateAndPromoteAsync(string key, SwappableInferenceSession.Entry serving, string fingerprint,
        FineTuningRoundResult result, string adapterFile, List<FeedbackRecord> train, List<FeedbackRecord> heldOut, HashSet<long> relabeled, long start, CancellationToken ct)
    {
        var golden = GoldenSample().Where(r => !relabeled.Contains(r.LabelIndex)).ToList();
        var candidate = evaluator.Predict(result.CandidateModelPath, [.. heldOut, .. golden], ct);
        var shared = heldOut.Count > 0 ? evaluator.Predict(serving.ModelPath, heldOut, ct).Predicted : [];
        var sharedGolden = golden.Count > 0 ? evaluator.Predict(serving.ModelPath, golden, ct).Predicted : [];
        double? Accuracy(ReadOnlySpan<int> predicted, IReadOnlyList<FeedbackRecord> truth)
        {
            if (truth.Count == 0) return null;
            var right = 0;
            for (var i = 0; i < truth.Count; i++) if (predicted[i] == truth[i].LabelIndex) right++;
            return (double)right / truth.Count;
        }
        var candHeld = Accuracy(candidate.Predicted.AsSpan(0, heldOut.Count), heldOut);
        var sharedHeld = Accuracy(shared, heldOut);
        var candGolden = Accuracy(candidate.Predicted.AsSpan(heldOut.Count), golden);
        var sharedGoldenAcc = Accuracy(sharedGolden, golden);
        var reasons = new List<string>();
        if (!candidate.OutputsFinite || CheckpointFiniteCheck.FindNonFinite(result.CandidateCheckpointPath) is not null)
            reasons.Add("the adapter's outputs or weights are not finite");
        if (candHeld is { } ch && sharedHeld is { } sh && ch < sh)
            reasons.Add($"on the key's {heldOut.Count} held-out records the adapter scores {ch:P1}, the shared model {sh:P1}");
        // The margin is at least one record: on a small golden sample one record is more than MaxGoldenDrop.
        var goldenLost = golden.Count == 0 ? 0 : (int)Math.Round(((sharedGoldenAcc ?? 0) - (candGolden ?? 0)) * golden.Count);
        if (candGolden is { } cg && sharedGoldenAcc is { } sg && goldenLost > Math.Max(1, (int)Math.Floor(Options.MaxGoldenDrop * golden.Count)))
            reasons.Add($"on {golden.Count} golden records (of classes the key does not relabel) the adapter scores {cg:P1}, more than {Options.MaxGoldenDrop:P1} below the shared model's {sg:P1}");
        AdapterInfo? promoted = null;
        if (reasons.Count == 0)
        {
            var discarded = await PromoteAsync(key, serving, fingerprint, adapterFile, train, candHeld, candGolden).ConfigureAwait(false);
            if (discarded.Reason is { } why) reasons.Add(why);
            else promoted = discarded.Info;
        }
        var outcome = promoted is not null ? RoundOutcome.Promoted : RoundOutcome.Rejected;
        if (promoted is not null) LogAdapterPromoted(Logger, model.Name, promoted.Version, train.Count);
        else LogAdapterRejected(Logger, model.Name, string.Join("; ", reasons));
        return new AdapterRoundCompletedEventArgs(model.Name, key, outcome, Stopwatch.GetElapsedTime(start), reasons)
        {
            Adapter = promoted,
            CandidateHeldOutAccuracy = candHeld,
            SharedHeldOutAccuracy = sharedHeld,
            CandidateGoldenAccuracy = candGolden,
            SharedGoldenAccuracy = sharedGoldenAcc,
            Statistics = result.Statistics with { NewRecords = train.Count },
        };
    }

    private async Task<(AdapterInfo? Info, string? Reason)> PromoteAsync(string key, SwappableInferenceSession.Entry trainedOn, string fingerprint, string adapterFile,
        List<FeedbackRecord> train, double? heldOut, double? golden)
    {
        var versions = model.Versions;
        await versions.LockAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            if (!ReferenceEquals(model.Sessions.Current, trainedOn))
                return (null, "the shared model changed during the round; the adapter was trained on the previous one and is discarded");
            if (Maintenance is { } m)
            {
                var missing = await m.GetMissingAsync(train.Select(r => r.Sequence).ToArray(), CancellationToken.None).ConfigureAwait(false);
                if (missing.Count > 0)
                    return (null, $"{missing.Count} of the round's {train.Count} training records were deleted during the round; the adapter is discarded");
            }
            var users = new SortedSet<string>(StringComparer.Ordinal);
            if (Maintenance is { } mm)
                foreach (var r in train)
                    if (r.UserId is { } u) users.Add(mm.HashUserId(u));
            var (_, stored) = model.AdapterRegistry!.Promote(key, adapterFile, new AdapterVersionState
            {
                BaseFingerprint = fingerprint,
                BaseModelVersion = trainedOn.Version?.Version,
                CreatedAt = model.TimeProvider.GetUtcNow(),
                TrainingRecords = train.Count,
                HeldOutAccuracy = heldOut,
                GoldenAccuracy = golden,
                UserHashes = [.. users],
            }, Options.KeepVersions);
            model.Adapters!.Invalidate(key);
            return (PersonalizationAdmin.ToInfo(key, stored, matches: true), null);
        }
        finally
        {
            versions.Unlock();
        }
    }

    private bool Usable(FeedbackRecord r)
    {
        try
        {
            model.Schema.ValidateInput(r.Text, r.Tensors);
            return r.LabelIndex >= 0 && (model.Schema.ClassCount is not { } n || r.LabelIndex < n) && float.IsFinite(r.Weight) && r.Weight >= 0;
        }
        catch (FeedbackValidationException)
        {
            return false;
        }
    }

    private List<FeedbackRecord> GoldenSample()
    {
        var all = _golden.Load().Records;
        return all.Count <= Options.GoldenSample ? [.. all] : StratifiedSample.Take(all, r => r.LabelIndex, Options.GoldenSample, seed: 17);
    }

    [LoggerMessage(4100, LogLevel.Information, "Model '{Model}': adapter round for a partition key trains on {Records} records ({HeldOut} held out, {Replay} replayed).")]
    private static partial void LogAdapterRoundStarted(ILogger logger, string model, int records, int heldOut, int replay);

    [LoggerMessage(4101, LogLevel.Information, "Model '{Model}': adapter version {Version} promoted for a partition key ({Records} records).")]
    private static partial void LogAdapterPromoted(ILogger logger, string model, int version, int records);

    [LoggerMessage(4102, LogLevel.Information, "Model '{Model}': adapter candidate rejected: {Reasons}.")]
    private static partial void LogAdapterRejected(ILogger logger, string model, string reasons);

    [LoggerMessage(4103, LogLevel.Warning, "Model '{Model}': adapter round failed.")]
    private static partial void LogAdapterRoundFailed(ILogger logger, string model, Exception error);
}
