using System.Globalization;
using OnnxTune.Hosting.Diagnostics;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Chooses what a start serves: the version the pointer names; when it is missing, retired or does not load, the
/// newest older kept version that loads; the base model only when no version is promoted (or none loads). Every
/// fallback is logged, raised as <see cref="FineTuningEvents.ServingFallback"/> and reported by the health check.
/// </summary>
internal static class ServingLoader
{
    public static (SwappableInferenceSession.Entry Entry, TimeSpan Elapsed) Load(FineTunedModel model)
    {
        var versions = model.Versions;
        var pointer = versions.ReadPointer();
        if (pointer is not > 0)
        {
            // No promotion yet (or every version retired): the base model is what should serve.
            var e = model.Prepare(null, model.BaseModelPath, out var t);
            model.Health.OnServingFallback(null);
            return (e, t);
        }
        var requested = pointer.Value;
        var reasons = new List<string>();
        var current = versions.GetCurrent();
        if (current is null) reasons.Add($"version {requested} is missing or retired");
        var candidates = new List<ModelVersionInfo>();
        if (current is not null) candidates.Add(current);
        candidates.AddRange(versions.ListVersions().Where(v => v.Version < requested).Reverse());
        foreach (var candidate in candidates)
        {
            try
            {
                var entry = model.Prepare(candidate, candidate.ModelPath, out var elapsed);
                if (candidate.Version != requested) Report(model, requested, candidate.Version, reasons);
                else model.Health.OnServingFallback(null);
                return (entry, elapsed);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                reasons.Add($"version {candidate.Version.ToString(CultureInfo.InvariantCulture)} does not load: {e.Message}");
            }
        }
        var baseEntry = model.Prepare(null, model.BaseModelPath, out var baseElapsed);
        Report(model, requested, null, reasons);
        return (baseEntry, baseElapsed);
    }

    private static void Report(FineTunedModel model, int requested, int? served, List<string> reasons)
    {
        var reason = string.Join("; ", reasons);
        var shown = served?.ToString(CultureInfo.InvariantCulture) ?? "the base model";
        Log.ServingFallback(model.Logger, model.Name, requested, shown, reason);
        model.Health.OnServingFallback($"the pointer names version {requested}, serving {shown}: {reason}");
        model.Events.OnServingFallback(new ServingFallbackEventArgs(model.Name, requested, served, reason),
            e => Log.EventHandlerFailed(model.Logger, model.Name, nameof(FineTuningEvents.ServingFallback), e));
    }
}
