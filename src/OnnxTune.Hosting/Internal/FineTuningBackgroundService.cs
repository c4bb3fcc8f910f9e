using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting.Diagnostics;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Serves the last promoted version from start-up, and runs fine-tuning rounds when the triggers say so:
/// enough new feedback, or the maximum interval passed with some new feedback, and (optionally) the model idle.
/// A round trains in a scratch folder, is gated, and is promoted and swapped in only when every gate passes.
/// Failures are caught per round; the serving model stays.
/// </summary>
internal sealed class FineTuningBackgroundService : BackgroundService
{
    internal const string WatermarkKey = "trained_through_sequence";
    internal const string RoundKey = "last_round";
    private const string RoundsFolder = "rounds";

    private readonly FineTunedModel _model;
    private readonly IFineTuningRound? _engine;
    private readonly IModelEvaluator _evaluator;
    private readonly IReadOnlyList<IValidationGate> _gates;
    private readonly GateEvaluation _evaluation;
    private readonly ILogger _logger;
    private DateTimeOffset _lastRoundAt;

    public FineTuningBackgroundService(FineTunedModel model, IFineTuningRound? engine, IModelEvaluator evaluator, IEnumerable<IValidationGate> appGates)
    {
        _model = model;
        _engine = engine;
        _evaluator = evaluator;
        var o = model.Options;
        _gates = [new FiniteGate(), new GoldenSetGate(o.GoldenTolerance), new HeldOutGate(o.MinHeldOutImprovement),
            new PerClassGate(o.Gate.PerClassTolerance, o.Gate.PerClassMinSupport), .. appGates];
        _evaluation = new GateEvaluation(model, evaluator);
        _logger = model.Logger;
    }

    internal TimeProvider TimeProvider => _model.TimeProvider;

    internal string RoundsRoot => Path.Combine(_model.Options.ModelStorePath, RoundsFolder);

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        // Leftovers of a round interrupted by a crash are never reused.
        if (Directory.Exists(RoundsRoot)) Directory.Delete(RoundsRoot, recursive: true);
        _model.EnsureServing();
        _lastRoundAt = TimeProvider.GetUtcNow();
        return base.StartAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (_engine is null)
        {
            Log.NoTrainingEngine(_logger, _model.Name);
            return;
        }
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                await Task.Delay(_model.Options.CheckInterval, TimeProvider, stoppingToken).ConfigureAwait(false);
                if (await ShouldRunAsync(stoppingToken).ConfigureAwait(false))
                    await RunRoundAsync(stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            // Trigger checks failed (for example the feedback database became unreadable): keep serving.
            Log.LoopFailed(_logger, _model.Name, e);
        }
    }

    internal async Task<bool> ShouldRunAsync(CancellationToken ct)
    {
        var o = _model.Options;
        var now = TimeProvider.GetUtcNow();
        if (o.OnlyWhenIdle && _model.Handle.LastUseTimestamp is { } last && TimeProvider.GetElapsedTime(last) < o.IdleWindow)
            return false;
        var watermark = await GetWatermarkAsync(ct).ConfigureAwait(false);
        var pending = await _model.Store.CountTrainingSinceAsync(watermark, ct).ConfigureAwait(false);
        if (pending == 0) return false;
        return pending >= o.MinNewFeedback || now - _lastRoundAt >= o.MaxInterval;
    }

    /// <summary>Runs one round now; returns its outcome (null when there was nothing new or it was cancelled).</summary>
    internal async Task<RoundOutcome?> RunRoundAsync(CancellationToken ct)
    {
        if (_engine is null) throw new InvalidOperationException($"Model '{_model.Name}': no fine-tuning engine is registered.");
        var o = _model.Options;
        var store = _model.Store;
        var round = long.Parse(await store.GetStateAsync(RoundKey, ct).ConfigureAwait(false) ?? "0", CultureInfo.InvariantCulture) + 1;
        var start = Stopwatch.GetTimestamp();
        var work = Path.Combine(RoundsRoot, round.ToString("D6", CultureInfo.InvariantCulture));
        _lastRoundAt = TimeProvider.GetUtcNow();
        GateDecision? decision = null;
        try
        {
            var watermark = await GetWatermarkAsync(ct).ConfigureAwait(false);
            var upTo = await store.GetLatestSequenceAsync(ct).ConfigureAwait(false);
            // New records since the watermark plus unconfirmed ones (deferred by the user cap, or from rejected rounds).
            var selection = await RoundSelection.SelectAsync(store, o.Gate, watermark, upTo, ct).ConfigureAwait(false);
            if (selection.NewSinceWatermark == 0) return null;
            var fresh = selection.Selected;
            if (selection.Deferred.Count > 0 || selection.Retried > 0)
                Log.RoundSelection(_logger, _model.Name, round, selection.Retried, selection.Deferred.Count, o.Gate.MaxUserShare);
            var replayCount = (int)Math.Ceiling(fresh.Count * o.ReplayRatio);
            var replay = await store.GetReplaySampleAsync(watermark, replayCount, unchecked((int)round), ct).ConfigureAwait(false);
            await store.SetStateAsync(RoundKey, round.ToString(CultureInfo.InvariantCulture), ct).ConfigureAwait(false);
            Log.RoundStarted(_logger, _model.Name, round, fresh.Count, replay.Count);

            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            Directory.CreateDirectory(work);
            var serving = _model.Sessions.Current;
            var servingModel = serving?.ModelPath ?? _model.BaseModelPath;
            var servingCheckpoint = serving?.Version?.CheckpointPath ?? _model.BaseCheckpointPath;

            var result = await _engine.RunAsync(new FineTuningRoundInput(
                _model.Name, round, o.ArtifactsPath, _model.Manifest, servingModel, servingCheckpoint, fresh, replay,
                o.EpochsPerRound, o.BatchSize, o.LearningRate, o.TrainingThreads, work), ct).ConfigureAwait(false);
            _model.Metrics.TrainLoss(_model.Name, result.TrainLoss);

            decision = await GateAsync(round, serving?.Version?.Version, servingModel, result, upTo, ct).ConfigureAwait(false);
            ct.ThrowIfCancellationRequested();

            // From here on the round commits: finish it even if shutdown starts, so no partial state is left.
            RoundOutcome outcome;
            if (decision.Promoted)
            {
                await PromoteAsync(round, result, decision).ConfigureAwait(false);
                outcome = RoundOutcome.Promoted;
            }
            else
            {
                outcome = RoundOutcome.Rejected;
                _model.Metrics.Rejection(_model.Name);
                Log.CandidateRejected(_logger, _model.Name, round, string.Join("; ", decision.Reasons));
                _model.Events.OnCandidateRejected(new CandidateRejectedEventArgs(decision), OnHandlerError(nameof(FineTuningEvents.CandidateRejected)));
            }
            // A promotion confirms the round's records (they join replay); a rejection keeps them out of replay and
            // retries them as new in later rounds (at most MaxRejectedRetries times). Deferred records wait.
            await selection.CommitAsync(store, decision.Promoted, o.Gate.MaxRejectedRetries, WatermarkKey, upTo).ConfigureAwait(false);
            _model.Metrics.RoundRecords(_model.Name, decision.Promoted ? "confirmed" : "pending", selection.Selected.Count);
            _model.Metrics.RoundRecords(_model.Name, "retried", selection.Retried);
            _model.Metrics.RoundRecords(_model.Name, "deferred", selection.Deferred.Count);
            await PurgeAsync().ConfigureAwait(false);
            Complete(round, outcome, start, decision, null, result.TrainLoss);
            return outcome;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            Log.RoundCancelled(_logger, _model.Name, round);
            return null;
        }
        catch (Exception e)
        {
            Log.RoundFailed(_logger, _model.Name, round, e);
            Complete(round, RoundOutcome.Failed, start, decision, e, null);
            return RoundOutcome.Failed;
        }
        finally
        {
            try { if (Directory.Exists(work)) Directory.Delete(work, recursive: true); }
            catch (IOException) { }
        }
    }

    private async Task<GateDecision> GateAsync(long round, int? servingVersion, string servingModel, FineTuningRoundResult result, long upTo, CancellationToken ct)
    {
        var (context, warnings) = await _evaluation.BuildAsync(round, servingVersion, servingModel, result.CandidateModelPath, result.TrainLoss, upTo, ct).ConfigureAwait(false);
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

    private async Task PromoteAsync(long round, FineTuningRoundResult result, GateDecision decision)
    {
        var versions = _model.Versions;
        await versions.LockAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
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
            var info = versions.AddVersion(result.CandidateModelPath, result.CandidateCheckpointPath, metrics, decision);
            await _model.ActivateAsync(info, versions, CancellationToken.None).ConfigureAwait(false);
            _model.Metrics.Promotion(_model.Name);
            Log.CandidatePromoted(_logger, _model.Name, round, info.Version);
            var pruned = versions.Prune();
            if (pruned.Count > 0) Log.VersionsPruned(_logger, _model.Name, string.Join(", ", pruned));
        }
        finally
        {
            versions.Unlock();
        }
    }

    private async Task PurgeAsync()
    {
        if (_model.Options.FeedbackRetention is not { } keep) return;
        var n = await _model.Store.DeleteOlderThanAsync(TimeProvider.GetUtcNow() - keep, CancellationToken.None).ConfigureAwait(false);
        if (n > 0) Log.FeedbackPurged(_logger, _model.Name, n);
    }

    private void RecordMetric(string metric, double? serving, double? candidate)
    {
        if (serving is { } s) _model.Metrics.GateMetric(_model.Name, metric, "serving", s);
        if (candidate is { } c) _model.Metrics.GateMetric(_model.Name, metric, "candidate", c);
    }

    private void Complete(long round, RoundOutcome outcome, long start, GateDecision? decision, Exception? error, double? trainLoss)
    {
        var elapsed = Stopwatch.GetElapsedTime(start);
        _model.Metrics.Round(_model.Name, outcome, elapsed);
        Log.RoundCompleted(_logger, _model.Name, round, outcome, elapsed.TotalMilliseconds, trainLoss);
        var summary = outcome switch
        {
            RoundOutcome.Failed => $"failed: {error?.Message}",
            RoundOutcome.Rejected => "rejected: " + string.Join("; ", decision?.Reasons ?? []),
            _ => $"promoted to version {_model.Sessions.Current?.Version?.Version}",
        };
        _model.LastRound = new LastRoundStatus(round, outcome, TimeProvider.GetUtcNow(), summary);
        _model.Events.OnRoundCompleted(new RoundCompletedEventArgs(_model.Name, round, outcome, elapsed, decision, error),
            OnHandlerError(nameof(FineTuningEvents.RoundCompleted)));
    }

    private Action<Exception> OnHandlerError(string name) => e => Log.EventHandlerFailed(_logger, _model.Name, name, e);

    private async Task<long> GetWatermarkAsync(CancellationToken ct) =>
        long.Parse(await _model.Store.GetStateAsync(WatermarkKey, ct).ConfigureAwait(false) ?? "0", CultureInfo.InvariantCulture);
}
