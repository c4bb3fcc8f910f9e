using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Unhealthy when no session serves, when the feedback store cannot be written (feedback would be lost), when
/// the fine-tuning loop stopped while the host runs, or after <see cref="ModelHealth.UnhealthyFailedRounds"/>
/// failed rounds in a row; Degraded when the last round failed, a loop iteration failed (it retries with backoff),
/// or start-up served an older version than the pointer names. Data: serving version, last round, failure counts
/// and the reasons.
/// </summary>
internal sealed class OnDeviceFineTuningHealthCheck(FineTunedModel model, DriftWatch? driftWatch = null) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var serving = model.Sessions.Current;
        var last = model.LastRound;
        var health = model.Health;
        var data = new Dictionary<string, object>
        {
            ["model"] = model.Name,
            ["serving_version"] = serving is null ? "none" : serving.Version?.Version.ToString(CultureInfo.InvariantCulture) ?? "base",
            ["last_round"] = last?.Round ?? 0,
            ["last_round_outcome"] = last?.Outcome.ToString() ?? "none",
            ["last_round_at"] = last?.At.ToString("O", CultureInfo.InvariantCulture) ?? "",
            ["consecutive_failed_rounds"] = health.ConsecutiveFailedRounds,
        };
        if (driftWatch?.Status is { } drift)
        {
            data["drift_watch"] = drift.State;
            data["drift_detail"] = drift.Detail;
        }
        var name = model.Name.Length == 0 ? "default" : model.Name;
        var unhealthy = new List<string>();
        var degraded = new List<string>();
        if (health.StoreError is { } store)
        {
            data["store_error"] = store.Kind.ToString();
            unhealthy.Add($"the feedback store cannot be used ({store.Kind}, {store.Operation}): {store.Message}");
        }
        if (health.LoopStopped is { } stopped)
        {
            data["loop"] = "stopped";
            unhealthy.Add($"the fine-tuning loop stopped: {stopped}");
        }
        if (health.ConsecutiveFailedRounds >= ModelHealth.UnhealthyFailedRounds)
            unhealthy.Add($"{health.ConsecutiveFailedRounds} rounds failed in a row; last: {health.LastRoundFailure}");
        else if (last?.Outcome == RoundOutcome.Failed)
            degraded.Add($"last round {last.Summary}");
        if (health.LoopError is { } loop)
        {
            data["loop_error"] = loop;
            degraded.Add($"the last loop iteration failed (retrying with backoff): {loop}");
        }
        if (health.ServingFallback is { } fallback)
        {
            data["serving_fallback"] = fallback;
            degraded.Add(fallback);
        }
        HealthCheckResult result =
            serving is null ? new(context.Registration.FailureStatus, $"Model '{name}' is not serving: {model.LoadError ?? "not loaded"}", data: data)
            : unhealthy.Count > 0 ? new(context.Registration.FailureStatus, $"Model '{name}' serves {data["serving_version"]}; {string.Join("; ", unhealthy.Concat(degraded))}", data: data)
            : degraded.Count > 0 ? HealthCheckResult.Degraded($"Model '{name}' serves {data["serving_version"]}; {string.Join("; ", degraded)}", data: data)
            : HealthCheckResult.Healthy($"Model '{name}' serves {data["serving_version"]}.", data);
        return Task.FromResult(result);
    }
}
