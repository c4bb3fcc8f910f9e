using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Hosting.Training;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Serves the last promoted version from start-up, and runs fine-tuning rounds when the triggers say so:
/// enough new feedback, or the maximum interval (monotonic clock) passed with some new feedback, and (optionally)
/// the model idle. A round trains in a scratch folder, is gated, and is promoted and swapped in only when every
/// gate passes and, under the version lock, the version it was gated against still serves and none of its training
/// records was deleted meanwhile. Records the engine cannot use are quarantined and the round goes on without them.
/// Every iteration's failure is caught; failures in a row back off exponentially; the serving model stays.
/// </summary>
internal sealed class FineTuningBackgroundService : BackgroundService
{
    internal const string WatermarkKey = "trained_through_sequence";
    internal const string RoundKey = "last_round";
    private const string RoundsFolder = "rounds";
    private const string PrefixCacheFolder = "prefix-cache";
    private const string PromotionGateName = "promotion";

    private readonly FineTunedModel _model;
    private readonly IFineTuningRound? _engine;
    private readonly IModelEvaluator _evaluator;
    private readonly IReadOnlyList<IValidationGate> _gates;
    private readonly GateEvaluation _evaluation;
    private readonly ILogger _logger;
    private readonly ITrainerLease? _lease;
    private long _lastRoundAt;
    private readonly SemaphoreSlim _roundLock = new(1, 1);
    private volatile RoundCompletedEventArgs? _lastCompleted;
    private bool _holdsLease;

    public FineTuningBackgroundService(FineTunedModel model, IFineTuningRound? engine, IModelEvaluator evaluator, IEnumerable<IValidationGate> appGates,
        ITrainerLease? lease = null)
    {
        _model = model;
        _lease = lease;
        _engine = engine;
        _evaluator = evaluator;
        var o = model.Options;
        _gates = [new FiniteGate(), new GoldenSetGate(o.GoldenTolerance), new HeldOutGate(o.MinHeldOutImprovement),
            new PerClassGate(o.Gate.PerClassTolerance, o.Gate.PerClassMinSupport), .. appGates];
        _evaluation = new GateEvaluation(model, evaluator);
        _logger = model.Logger;
        if (engine is not null) model.RoundRunner = RunRequestedRoundAsync;
        if (engine is not null && model.AdapterRegistry is not null)
        {
            _personalization = new Personalization.PersonalizationRounds(model, engine, evaluator, RoundsRoot);
            model.AdapterRoundRunner = RunRequestedAdapterRoundAsync;
        }
    }

    private readonly Personalization.PersonalizationRounds? _personalization;

    /// <summary>An adapter round requested through <see cref="IPersonalizationAdmin.RunRoundAsync"/>: after any running round.</summary>
    internal async Task<AdapterRoundCompletedEventArgs?> RunRequestedAdapterRoundAsync(string key, CancellationToken ct)
    {
        await _roundLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            return await _personalization!.RunKeyAsync(key, ct).ConfigureAwait(false);
        }
        finally
        {
            _roundLock.Release();
        }
    }

    /// <summary>Runs the due adapter rounds (after the shared round of the same iteration).</summary>
    internal async Task RunDueAdapterRoundsAsync(CancellationToken ct)
    {
        if (_personalization is null) return;
        await _roundLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await _personalization.RunDueAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _roundLock.Release();
        }
    }

    internal TimeProvider TimeProvider => _model.TimeProvider;

    internal string RoundsRoot => Path.Combine(_model.Options.ModelStorePath, RoundsFolder);

    private IFeedbackMaintenance? Maintenance => _model.Store as IFeedbackMaintenance;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        // Leftovers of a round interrupted by a crash are never reused (the store lock makes them ours).
        if (Directory.Exists(RoundsRoot)) Directory.Delete(RoundsRoot, recursive: true);
        if (_model.Versions.RemovedOrphans.Count > 0)
            Log.OrphansRemoved(_logger, _model.Name, string.Join(", ", _model.Versions.RemovedOrphans));
        try
        {
            await ReconcileAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _model.Health.OnLoopError(e);
            Log.LoopIterationFailed(_logger, _model.Name, 0, 0, e);
        }
        _model.EnsureServing();
        _lastRoundAt = TimeProvider.GetTimestamp();
        await base.StartAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Promotion writes the round's upTo sequence into the version's provenance before the pointer moves, so a
    /// crash between pointer and watermark is repaired here: the watermark (and round counter) never lag the
    /// serving version.
    /// </summary>
    private async Task ReconcileAsync(CancellationToken ct)
    {
        if (_model.Versions.GetCurrent() is not { } current || ModelVersionStore.ReadProvenance(current) is not { } provenance) return;
        var watermark = await GetWatermarkAsync(ct).ConfigureAwait(false);
        if (provenance.UpToSequence > watermark)
        {
            await _model.Store.SetStateAsync(WatermarkKey, provenance.UpToSequence.ToString(CultureInfo.InvariantCulture), ct).ConfigureAwait(false);
            Log.WatermarkReconciled(_logger, _model.Name, watermark, provenance.UpToSequence, current.Version);
        }
        if (provenance.Round > await ReadCounterAsync(RoundKey, ct).ConfigureAwait(false))
            await _model.Store.SetStateAsync(RoundKey, provenance.Round.ToString(CultureInfo.InvariantCulture), ct).ConfigureAwait(false);
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        try
        {
            await base.StopAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            // Also when the loop never started (a stop right after start cancels it before its first line).
            _model.Health.OnLoopStopped("the host is stopping");
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (_engine is null)
        {
            // Serving only, by configuration: not a failure.
            Log.NoTrainingEngine(_logger, _model.Name);
            return;
        }
        var failures = 0;
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                await Task.Delay(NextDelay(failures), TimeProvider, stoppingToken).ConfigureAwait(false);
                try
                {
                    if (!await HoldsLeaseAsync(stoppingToken).ConfigureAwait(false))
                    {
                        _model.Health.OnLoopOk();
                        failures = 0;
                        continue;
                    }
                    var outcome = await ShouldRunAsync(stoppingToken).ConfigureAwait(false) ? await RunRoundAsync(stoppingToken).ConfigureAwait(false) : null;
                    await RunDueAdapterRoundsAsync(stoppingToken).ConfigureAwait(false);
                    _model.Health.OnLoopOk();
                    failures = outcome == RoundOutcome.Failed ? failures + 1 : 0;
                    if (failures > 0)
                        Log.LoopIterationFailed(_logger, _model.Name, failures, NextDelay(failures).TotalSeconds, new OnnxTuneException($"round failed: {_model.Health.LastRoundFailure}"));
                }
                catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
                {
                    throw;
                }
                catch (Exception e)
                {
                    // Trigger checks or round bookkeeping failed (for example the feedback database is busy or unreadable): keep serving, back off, retry.
                    failures++;
                    _model.Health.OnLoopError(e);
                    Log.LoopIterationFailed(_logger, _model.Name, failures, NextDelay(failures).TotalSeconds, e);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            Log.LoopFailed(_logger, _model.Name, e);
            _model.Health.OnLoopStopped($"{e.GetType().Name}: {e.Message}");
            return;
        }
        _model.Health.OnLoopStopped("the host is stopping");
    }

    /// <summary>
    /// With a trainer lease (several instances on one shared store) only its holder trains. An instance that takes
    /// the lease over first raises the watermark to the serving version's provenance (the previous trainer may have
    /// died between its promotion and its watermark write).
    /// </summary>
    private async Task<bool> HoldsLeaseAsync(CancellationToken ct)
    {
        if (_lease is null) return true;
        var held = await _lease.TryHoldAsync(ct).ConfigureAwait(false);
        if (held && !_holdsLease)
        {
            await ReconcileAsync(ct).ConfigureAwait(false);
            _lastRoundAt = TimeProvider.GetTimestamp();
            Log.TrainerLeaseAcquired(_logger, _model.Name);
        }
        else if (!held && _holdsLease) Log.TrainerLeaseLost(_logger, _model.Name);
        _holdsLease = held;
        return held;
    }

    /// <summary>The check interval, doubled per failure in a row (capped at the max interval, at most 15 minutes).</summary>
    internal TimeSpan NextDelay(int failures)
    {
        var o = _model.Options;
        if (failures <= 0) return o.CheckInterval;
        var cap = TimeSpan.FromTicks(Math.Max(o.CheckInterval.Ticks, Math.Min(o.MaxInterval.Ticks, TimeSpan.FromMinutes(15).Ticks)));
        var ticks = o.CheckInterval.Ticks * Math.Pow(2, Math.Min(failures, 30));
        return ticks >= cap.Ticks ? cap : TimeSpan.FromTicks((long)ticks);
    }

    internal async Task<bool> ShouldRunAsync(CancellationToken ct)
    {
        var o = _model.Options;
        if (o.OnlyWhenIdle && _model.Handle.LastUseTimestamp is { } last && TimeProvider.GetElapsedTime(last) < o.IdleWindow)
            return false;
        var watermark = await GetWatermarkAsync(ct).ConfigureAwait(false);
        var pending = await _model.Store.CountTrainingSinceAsync(watermark, ct).ConfigureAwait(false);
        if (pending == 0) return false;
        // Monotonic: a wall-clock jump (either way) neither starts nor delays a round.
        return pending >= o.MinNewFeedback || TimeProvider.GetElapsedTime(_lastRoundAt) >= o.MaxInterval;
    }

    /// <summary>A round requested through <see cref="IFineTuningAdmin.RunRoundAsync"/>: waits for a running round, then runs one whatever the trigger thresholds.</summary>
    internal async Task<RoundCompletedEventArgs?> RunRequestedRoundAsync(CancellationToken ct)
    {
        // Several instances on one store: only the lease holder trains, requested or not.
        if (!await HoldsLeaseAsync(ct).ConfigureAwait(false))
            throw new InvalidOperationException($"Model '{_model.Name}': another instance holds the trainer lease; request the round there (or wait for the lease to expire).");
        var outcome = await RunRoundAsync(ct).ConfigureAwait(false);
        return outcome is null ? null : _lastCompleted;
    }

    /// <summary>Runs one round now; returns its outcome (null when there was nothing new or it was cancelled). Rounds never overlap.</summary>
    internal async Task<RoundOutcome?> RunRoundAsync(CancellationToken ct)
    {
        await _roundLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            return await RunRoundUnderLockAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _roundLock.Release();
        }
    }

    private async Task<RoundOutcome?> RunRoundUnderLockAsync(CancellationToken ct)
    {
        if (_engine is null) throw new InvalidOperationException($"Model '{_model.Name}': no fine-tuning engine is registered.");
        var o = _model.Options;
        var store = _model.Store;
        var start = Stopwatch.GetTimestamp();
        _lastRoundAt = TimeProvider.GetTimestamp();
        long round = 0;
        string? work = null;
        GateDecision? decision = null;
        var stats = new RoundStatistics();
        var failed = new List<(FeedbackRecord Record, Exception Error)>();
        try
        {
            round = await ReadCounterAsync(RoundKey, ct).ConfigureAwait(false) + 1;
            work = Path.Combine(RoundsRoot, round.ToString("D6", CultureInfo.InvariantCulture));
            var watermark = await GetWatermarkAsync(ct).ConfigureAwait(false);
            var upTo = await store.GetLatestSequenceAsync(ct).ConfigureAwait(false);
            // New records since the watermark plus unconfirmed ones (deferred by the user cap, or from rejected rounds).
            var selection = await RoundSelection.SelectAsync(store, o.Gate, watermark, upTo, ct).ConfigureAwait(false);
            if (selection.NewSinceWatermark == 0) return null;
            var fresh = await ScreenAsync(selection.Selected, ct).ConfigureAwait(false);
            if (selection.Deferred.Count > 0 || selection.Retried > 0)
                Log.RoundSelection(_logger, _model.Name, round, selection.Retried, selection.Deferred.Count, o.Gate.MaxUserShare);
            var replayCount = (int)Math.Ceiling(fresh.Count * o.ReplayRatio);
            var (fromSet, fromStore) = ReplaySampler.Split(replayCount, _model.ReplaySet.Count, o.BaseReplayShare);
            var storeReplay = await ScreenAsync(await store.GetReplaySampleAsync(watermark, fromStore, unchecked((int)round), ct).ConfigureAwait(false), ct).ConfigureAwait(false);
            // Early rounds have little earlier feedback: the replay set makes up the difference.
            fromSet += fromStore - storeReplay.Count;
            IReadOnlyList<FeedbackRecord> replay = [.. storeReplay, .. ReplaySampler.ClassBalanced(_model.ReplaySet, fromSet, unchecked((int)round))];
            await store.SetStateAsync(RoundKey, round.ToString(CultureInfo.InvariantCulture), ct).ConfigureAwait(false);
            Log.RoundStarted(_logger, _model.Name, round, fresh.Count, replay.Count);

            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            Directory.CreateDirectory(work);
            var serving = _model.Sessions.Current;
            var servingModel = serving?.ModelPath ?? _model.BaseModelPath;
            var servingCheckpoint = serving?.Version?.CheckpointPath ?? _model.BaseCheckpointPath;

            var result = await _engine.RunAsync(new FineTuningRoundInput(
                _model.Name, round, o.ArtifactsPath, _model.Manifest, servingModel, servingCheckpoint, fresh, replay,
                o.EpochsPerRound, o.BatchSize, o.LearningRate, o.TrainingThreads, work)
            {
                EncoderLearningRateScale = o.EncoderLearningRateScale,
                HeadParameters = [.. o.HeadParameters],
                WarmupFraction = o.WarmupFraction,
                DistillationWeight = o.DistillationWeight,
                TrainingNiceness = o.TrainingNiceness,
                TrainingIdlePriority = o.UsesIdleTrainingPriority(),
                PrefixCacheDirectory = o.UsePrefixCache ? Path.Combine(o.ModelStorePath, PrefixCacheFolder) : null,
                RecordFailed = (r, e) => { lock (failed) failed.Add((r, e)); },
            }, ct).ConfigureAwait(false);
            var quarantined = await QuarantineFailedAsync(failed).ConfigureAwait(false);
            _model.Metrics.TrainLoss(_model.Name, result.TrainLoss);

            stats = result.Statistics with { NewRecords = fresh.Count, ReplayRecords = replay.Count, QuarantinedRecords = quarantined.Count };
            var gateStarted = Stopwatch.GetTimestamp();
            decision = await GateAsync(round, serving?.Version?.Version, servingModel, result, upTo, ct).ConfigureAwait(false);
            stats = stats with { GateTime = Stopwatch.GetElapsedTime(gateStarted) };
            ct.ThrowIfCancellationRequested();

            // From here on the round commits: finish it even if shutdown starts, so no partial state is left.
            RoundOutcome outcome;
            string? discarded = null;
            if (decision.Promoted)
            {
                // Replay-set records (sequence 0) live in a file, not the store: no deletion can touch them.
                var trained = fresh.Concat(replay).Where(r => r.Sequence > 0 && !quarantined.Contains(r.Sequence)).DistinctBy(r => r.Sequence).ToList();
                var promoteStarted = Stopwatch.GetTimestamp();
                discarded = await PromoteAsync(round, result, decision, serving?.Version?.Version, trained, upTo).ConfigureAwait(false);
                stats = stats with { PromotionTime = Stopwatch.GetElapsedTime(promoteStarted) };
                if (discarded is null) outcome = RoundOutcome.Promoted;
                else
                {
                    // The candidate is dropped; its records stay new for the next round (the watermark does not move).
                    decision = decision with { Promoted = false, Checks = [.. decision.Checks, GateCheckResult.Fail(PromotionGateName, discarded)] };
                    outcome = RoundOutcome.Rejected;
                    Log.CandidateDiscarded(_logger, _model.Name, round, discarded);
                    _model.Metrics.Rejection(_model.Name);
                    _model.Events.OnCandidateRejected(new CandidateRejectedEventArgs(decision), OnHandlerError(nameof(FineTuningEvents.CandidateRejected)));
                }
            }
            else
            {
                outcome = RoundOutcome.Rejected;
                _model.Metrics.Rejection(_model.Name);
                Log.CandidateRejected(_logger, _model.Name, round, string.Join("; ", decision.Reasons));
                _model.Events.OnCandidateRejected(new CandidateRejectedEventArgs(decision), OnHandlerError(nameof(FineTuningEvents.CandidateRejected)));
            }
            // A discarded candidate (rollback or deletion during the round) leaves its records new: nothing is committed.
            if (discarded is null)
            {
            // A promotion confirms the round's records (they join replay); a rejection keeps them out of replay and
            // retries them as new in later rounds (at most MaxRejectedRetries times). Deferred records wait.
            await selection.CommitAsync(store, decision.Promoted, o.Gate.MaxRejectedRetries, WatermarkKey, upTo).ConfigureAwait(false);
            _model.Metrics.RoundRecords(_model.Name, decision.Promoted ? "confirmed" : "pending", selection.Selected.Count);
            _model.Metrics.RoundRecords(_model.Name, "retried", selection.Retried);
            _model.Metrics.RoundRecords(_model.Name, "deferred", selection.Deferred.Count);
            }
            await PurgeAsync().ConfigureAwait(false);
            Complete(round, outcome, start, decision, null, result.TrainLoss, stats);
            return outcome;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await QuarantineFailedQuietlyAsync(failed).ConfigureAwait(false);
            Log.RoundCancelled(_logger, _model.Name, round);
            return null;
        }
        catch (Exception e)
        {
            // Records the engine reported as unusable leave the training set even when the round failed, so the next one can pass.
            await QuarantineFailedQuietlyAsync(failed).ConfigureAwait(false);
            Log.RoundFailed(_logger, _model.Name, round, e);
            Complete(round, RoundOutcome.Failed, start, decision, e, null, stats);
            return RoundOutcome.Failed;
        }
        finally
        {
            try { if (work is not null && Directory.Exists(work)) Directory.Delete(work, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>
    /// Re-checks stored records against the current schema (it may be stricter than when they were written, or a
    /// row may have been altered) and quarantines the ones that fail, so that they cannot fail every round.
    /// </summary>
    private async Task<IReadOnlyList<FeedbackRecord>> ScreenAsync(IReadOnlyList<FeedbackRecord> records, CancellationToken ct)
    {
        List<FeedbackRecord>? kept = null;
        for (var i = 0; i < records.Count; i++)
        {
            var r = records[i];
            string? reason = null;
            try
            {
                _model.Schema.ValidateInput(r.Text, r.Tensors);
                if (r.LabelIndex < 0 || (_model.Schema.ClassCount is { } n && r.LabelIndex >= n))
                    reason = $"label index {r.LabelIndex} is out of range";
                else if (!float.IsFinite(r.Weight) || r.Weight < 0)
                    reason = $"weight {r.Weight} is invalid";
            }
            catch (FeedbackValidationException e)
            {
                reason = $"fails validation ({e.Kind}, {e.Field}): {e.Message}";
            }
            if (reason is null)
            {
                kept?.Add(r);
                continue;
            }
            kept ??= [.. records.Take(i)];
            await QuarantineAsync(r, reason, ct).ConfigureAwait(false);
        }
        return kept ?? records;
    }

    private async Task<HashSet<long>> QuarantineFailedAsync(List<(FeedbackRecord Record, Exception Error)> failed)
    {
        var done = new HashSet<long>();
        List<(FeedbackRecord Record, Exception Error)> copy;
        lock (failed) copy = [.. failed];
        // Replay-set records are not in the store (sequence 0): the round just goes on without them.
        foreach (var (record, error) in copy.Where(f => f.Record.Sequence > 0))
            if (done.Add(record.Sequence))
                await QuarantineAsync(record, $"the training engine could not use it: {error.GetType().Name}: {error.Message}", CancellationToken.None).ConfigureAwait(false);
        return done;
    }

    private async Task QuarantineFailedQuietlyAsync(List<(FeedbackRecord Record, Exception Error)> failed)
    {
        try { await QuarantineFailedAsync(failed).ConfigureAwait(false); }
        catch (Exception e) when (e is not OutOfMemoryException) { _model.Health.OnStoreFailure(e); }
    }

    private async Task QuarantineAsync(FeedbackRecord record, string reason, CancellationToken ct)
    {
        Log.RecordQuarantined(_logger, _model.Name, record.Sequence, record.Id, reason);
        if (Maintenance is { } m) await m.QuarantineAsync(record.Sequence, reason, ct).ConfigureAwait(false);
    }

    private async Task<GateDecision> GateAsync(long round, int? servingVersion, string servingModel, FineTuningRoundResult result, long upTo, CancellationToken ct)
    {
        var (context, warnings) = await _evaluation.BuildAsync(round, servingVersion, servingModel, result.CandidateModelPath, result.TrainLoss, upTo, ct).ConfigureAwait(false);
        // The optimizer state must be finite too: inf in exp_avg_sq would stop every later round from learning.
        if (context.CandidateWeightsFinite && CheckpointFiniteCheck.FindNonFinite(result.CandidateCheckpointPath) is { } bad)
            context = context with { CandidateWeightsFinite = false };
        RecordMetric("held_out", context.Serving.HeldOutMetric, context.Candidate.HeldOutMetric);
        RecordMetric("golden", context.Serving.GoldenMetric, context.Candidate.GoldenMetric);
        if (context.HeldOut is { } paired) RecordMetric("held_out_lower_bound", null, paired.LowerBound);
        if (context.ClassDeltas.FirstOrDefault(d => d.Judged) is { } worst) RecordMetric("worst_class_delta", null, worst.Delta);
        var checks = new List<GateCheckResult>(_gates.Count);
        foreach (var gate in _gates)
        {
            GateCheckResult check;
            try { check = await gate.EvaluateAsync(context, ct).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                check = GateCheckResult.Fail(gate.Name, $"the gate threw {e.GetType().Name}: {e.Message}");
            }
            checks.Add(check);
        }
        return new GateDecision
        {
            ModelName = _model.Name,
            Round = round,
            Promoted = checks.All(c => c.Passed),
            DecidedAt = TimeProvider.GetUtcNow(),
            ServingVersion = servingVersion,
            TrainLoss = result.TrainLoss,
            Serving = context.Serving,
            Candidate = context.Candidate,
            Checks = checks,
            Golden = context.Golden,
            HeldOut = context.HeldOut,
            ClassDeltas = context.ClassDeltas.Take(GateEvaluation.ReportedClassDeltas).ToArray(),
            Warnings = warnings,
        };
    }

    /// <summary>
    /// Promotes under the version lock, or returns why the candidate is discarded. The version folder carries the
    /// round's provenance (with its upTo sequence) before the pointer moves; the watermark follows at once, and a
    /// crash in between is reconciled at start from the provenance.
    /// </summary>
    private async Task<string?> PromoteAsync(long round, FineTuningRoundResult result, GateDecision decision, int? gatedAgainst,
        IReadOnlyList<FeedbackRecord> trained, long upTo)
    {
        var versions = _model.Versions;
        await versions.LockAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            var serving = _model.Sessions.Current?.Version?.Version;
            var pointer = versions.GetCurrent()?.Version;
            if (serving != gatedAgainst || pointer != gatedAgainst)
                return $"the serving version changed from {Show(gatedAgainst)} to {Show(serving)} during the round (a rollback or retirement); the candidate was gated against {Show(gatedAgainst)} and is discarded, and its feedback trains again in the next round";
            if (Maintenance is { } m && trained.Count > 0)
            {
                var missing = await m.GetMissingAsync(trained.Select(r => r.Sequence).ToArray(), CancellationToken.None).ConfigureAwait(false);
                if (missing.Count > 0)
                    return $"{missing.Count} of the round's {trained.Count} training records were deleted during the round (user deletion); the candidate is discarded, and the remaining records train in the next round";
            }
            var metrics = new Dictionary<string, object?>
            {
                ["round"] = round,
                ["train_loss"] = result.TrainLoss,
                ["steps"] = result.Steps,
                ["held_out"] = decision.Candidate.HeldOutMetric,
                ["held_out_count"] = decision.Candidate.HeldOutCount,
                ["golden"] = decision.Candidate.GoldenMetric,
                ["golden_count"] = decision.Candidate.GoldenCount,
            };
            ModelVersionInfo info;
            try
            {
                info = versions.AddVersion(result.CandidateModelPath, result.CandidateCheckpointPath, metrics, decision, Provenance(round, gatedAgainst, trained, upTo));
            }
            catch (VersionPromotionRefusedException refused)
            {
                return $"the shared registry refused the new version: {refused.Message}; the candidate is discarded, and its feedback trains again in the next round";
            }
            try
            {
                await _model.ActivateAsync(info, versions, CancellationToken.None).ConfigureAwait(false);
            }
            catch (VersionPromotionRefusedException refused)
            {
                // Another instance took the trainer lease or moved the shared pointer: this candidate must not serve.
                versions.Discard(info);
                return $"the shared registry refused the promotion: {refused.Message}; the candidate is discarded, and its feedback trains again in the next round";
            }
            catch
            {
                versions.Discard(info);
                throw;
            }
            await _model.Store.SetStateAsync(WatermarkKey, upTo.ToString(CultureInfo.InvariantCulture), CancellationToken.None).ConfigureAwait(false);
            CrashPoints.Hit(CrashPoints.AfterWatermark);
            _model.Metrics.Promotion(_model.Name);
            Log.CandidatePromoted(_logger, _model.Name, round, info.Version);
            var pruned = versions.Prune();
            if (pruned.Deleted.Count > 0) Log.VersionsPruned(_logger, _model.Name, string.Join(", ", pruned.Deleted));
            if (pruned.Errors.Count > 0) Log.PruneErrors(_logger, _model.Name, string.Join("; ", pruned.Errors));
            return null;
        }
        finally
        {
            versions.Unlock();
        }
    }

    private VersionProvenance Provenance(long round, int? gatedAgainst, IReadOnlyList<FeedbackRecord> trained, long upTo)
    {
        var hashes = new SortedSet<string>(StringComparer.Ordinal);
        if (Maintenance is { } m)
            foreach (var r in trained)
                if (r.UserId is { } user) hashes.Add(m.HashUserId(user));
        return new VersionProvenance
        {
            Round = round,
            GatedAgainstVersion = gatedAgainst,
            FirstSequence = trained.Count > 0 ? trained.Min(r => r.Sequence) : 0,
            UpToSequence = upTo,
            RecordCount = trained.Count,
            UserHashes = [.. hashes],
            AnonymousRecordCount = trained.Count(r => r.UserId is null),
        };
    }

    private static string Show(int? version) => version?.ToString(CultureInfo.InvariantCulture) ?? "the base model";

    private async Task PurgeAsync()
    {
        if (_model.Options.FeedbackRetention is not { } keep) return;
        var cutoff = TimeProvider.GetUtcNow() - keep;
        // Only records at or below the watermark: a wall clock that jumps forward never deletes untrained feedback.
        var n = Maintenance is { } m
            ? await m.DeleteOlderThanAsync(cutoff, await GetWatermarkAsync(CancellationToken.None).ConfigureAwait(false), CancellationToken.None).ConfigureAwait(false)
            : await _model.Store.DeleteOlderThanAsync(cutoff, CancellationToken.None).ConfigureAwait(false);
        if (n > 0) Log.FeedbackPurged(_logger, _model.Name, n);
    }

    private void RecordMetric(string metric, double? serving, double? candidate)
    {
        if (serving is { } s) _model.Metrics.GateMetric(_model.Name, metric, "serving", s);
        if (candidate is { } c) _model.Metrics.GateMetric(_model.Name, metric, "candidate", c);
    }

    private void Complete(long round, RoundOutcome outcome, long start, GateDecision? decision, Exception? error, double? trainLoss, RoundStatistics statistics)
    {
        var elapsed = Stopwatch.GetElapsedTime(start);
        _model.Metrics.Round(_model.Name, outcome, elapsed);
        Log.RoundCompleted(_logger, _model.Name, round, outcome, elapsed.TotalMilliseconds, trainLoss);
        if (outcome == RoundOutcome.Failed) _model.Health.OnRoundFailed(error);
        else _model.Health.OnRoundFinished();
        var summary = outcome switch
        {
            RoundOutcome.Failed => $"failed: {error?.Message}",
            RoundOutcome.Rejected => "rejected: " + string.Join("; ", decision?.Reasons ?? []),
            _ => $"promoted to version {_model.Sessions.Current?.Version?.Version}",
        };
        _model.LastRound = new LastRoundStatus(round, outcome, TimeProvider.GetUtcNow(), summary);
        var completed = new RoundCompletedEventArgs(_model.Name, round, outcome, elapsed, decision, error) { Statistics = statistics };
        _lastCompleted = completed;
        _model.Events.OnRoundCompleted(completed, OnHandlerError(nameof(FineTuningEvents.RoundCompleted)));
    }

    private Action<Exception> OnHandlerError(string name) => e => Log.EventHandlerFailed(_logger, _model.Name, name, e);

    private Task<long> GetWatermarkAsync(CancellationToken ct) => ReadCounterAsync(WatermarkKey, ct);

    /// <summary>A stored counter; a damaged value reads as 0 (the watermark then re-trains, the round number restarts) instead of failing every iteration.</summary>
    private async Task<long> ReadCounterAsync(string key, CancellationToken ct)
    {
        var text = await _model.Store.GetStateAsync(key, ct).ConfigureAwait(false);
        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : 0;
    }
}
