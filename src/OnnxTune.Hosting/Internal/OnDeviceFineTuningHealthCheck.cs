using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Healthy while a session serves; Degraded when the last round failed (serving continues); Unhealthy when no
/// session could be loaded. Data: serving version and the last round's outcome.
/// </summary>
internal sealed class OnDeviceFineTuningHealthCheck(FineTunedModel model, DriftWatch? driftWatch = null) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var serving = model.Sessions.Current;
        var last = model.LastRound;
        var data = new Dictionary<string, object>
        {
            ["model"] = model.Name,
            ["serving_version"] = serving is null ? "none" : serving.Version?.Version.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "base",
            ["last_round"] = last?.Round ?? 0,
            ["last_round_outcome"] = last?.Outcome.ToString() ?? "none",
            ["last_round_at"] = last?.At.ToString("O", System.Globalization.CultureInfo.InvariantCulture) ?? "",
        };
        if (driftWatch?.Status is { } drift)
        {
            data["drift_watch"] = drift.State;
            data["drift_detail"] = drift.Detail;
        }
        var name = model.Name.Length == 0 ? "default" : model.Name;
        HealthCheckResult result =
            serving is null ? new(context.Registration.FailureStatus, $"Model '{name}' is not serving: {model.LoadError ?? "not loaded"}", data: data)
            : last?.Outcome == RoundOutcome.Failed ? HealthCheckResult.Degraded($"Model '{name}' serves {data["serving_version"]}; last round {last.Summary}", data: data)
            : HealthCheckResult.Healthy($"Model '{name}' serves {data["serving_version"]}.", data);
        return Task.FromResult(result);
    }
}
