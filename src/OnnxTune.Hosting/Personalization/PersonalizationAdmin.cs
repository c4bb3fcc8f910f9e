using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Personalization;

/// <summary>The <see cref="IPersonalizationAdmin"/> of one model.</summary>
internal sealed class PersonalizationAdmin(FineTunedModel model) : IPersonalizationAdmin
{
    private AdapterRegistry Registry => model.AdapterRegistry ?? throw new InvalidOperationException($"Model '{model.Name}' has personalization off (Personalization:Enabled).");

    public AdapterInfo? GetAdapter(string partitionKey)
    {
        ArgumentNullException.ThrowIfNull(partitionKey);
        return Registry.Get(partitionKey) is { Serving: { } v } ? ToInfo(partitionKey, v, Matches(v)) : null;
    }

    public IReadOnlyList<AdapterInfo> ListAdapters() =>
        [.. Registry.All().Where(s => s.Serving is not null).Select(s => ToInfo(s.Key, s.Serving!, Matches(s.Serving!)))];

    public Task<AdapterRoundCompletedEventArgs?> RunRoundAsync(string partitionKey, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(partitionKey);
        _ = Registry;
        return model.AdapterRoundRunner is { } run ? run(partitionKey, cancellationToken)
            : throw new InvalidOperationException($"Model '{model.Name}' runs no adapter rounds: no fine-tuning engine is registered (serving only), or the host has not started.");
    }

    public async Task<AdapterInfo?> RollbackAsync(string partitionKey, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(partitionKey);
        await model.Versions.LockAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var state = Registry.Rollback(partitionKey);
            model.Adapters!.Invalidate(partitionKey);
            return state?.Serving is { } v ? ToInfo(partitionKey, v, Matches(v)) : null;
        }
        finally
        {
            model.Versions.Unlock();
        }
    }

    public async Task<bool> DeleteAsync(string partitionKey, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(partitionKey);
        await model.Versions.LockAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var deleted = Registry.Delete(partitionKey);
            model.Adapters!.Invalidate(partitionKey);
            return deleted;
        }
        finally
        {
            model.Versions.Unlock();
        }
    }

    /// <summary>
    /// Deletes the adapters trained on a user's records, and the adapter of the key equal to the user id: called by
    /// user deletion under the version lock, so that an adapter promotion either sees the deletion or is deleted here.
    /// </summary>
    internal static int DeleteForUser(FineTunedModel model, string userId, string? userHash)
    {
        if (model.AdapterRegistry is not { } registry) return 0;
        var n = 0;
        foreach (var state in registry.All())
        {
            var trainedOnUser = state.Key == userId || (userHash is not null && state.Versions.Any(v => v.UserHashes.Contains(userHash, StringComparer.Ordinal)));
            if (!trainedOnUser || !registry.Delete(state.Key)) continue;
            model.Adapters?.Invalidate(state.Key);
            n++;
        }
        return n;
    }

    private bool Matches(AdapterVersionState v) =>
        model.Sessions.Current is { } serving && v.BaseFingerprint == model.AdapterBases!.Fingerprint(serving.ModelPath);

    internal static AdapterInfo ToInfo(string key, AdapterVersionState v, bool matches) =>
        new(key, v.Version, v.BaseModelVersion, v.CreatedAt, v.TrainingRecords, v.HeldOutAccuracy, v.GoldenAccuracy, v.SizeBytes) { MatchesServingModel = matches };
}
