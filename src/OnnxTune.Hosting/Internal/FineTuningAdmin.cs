using OnnxTune.Hosting.Diagnostics;

namespace OnnxTune.Hosting.Internal;

/// <summary>The <see cref="IFineTuningAdmin"/> of one model.</summary>
internal sealed class FineTuningAdmin(FineTunedModel model) : IFineTuningAdmin
{
    private IFeedbackMaintenance? Maintenance => model.Store as IFeedbackMaintenance;

    public Task<RoundCompletedEventArgs?> RunRoundAsync(CancellationToken cancellationToken = default) =>
        model.RoundRunner is { } run ? run(cancellationToken)
        : throw new InvalidOperationException($"Model '{model.Name}' runs no rounds: no fine-tuning engine is registered (serving only), or the host has not started.");

    public async Task<UserDeletionResult> DeleteUserAsync(string userId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(userId);
        int deleted;
        var adapters = 0;
        // Under the version lock: a promotion checks for deleted records under the same lock, so it either sees
        // this deletion (and discards its candidate) or finished before it (and its version is listed below).
        await model.Versions.LockAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            deleted = await model.Store.DeleteUserAsync(userId, cancellationToken).ConfigureAwait(false);
            adapters = Personalization.PersonalizationAdmin.DeleteForUser(model, userId, Maintenance?.HashUserId(userId));
        }
        finally
        {
            model.Versions.Unlock();
        }
        var affected = new List<int>();
        if (Maintenance is { } m)
        {
            var hash = m.HashUserId(userId);
            foreach (var v in model.Versions.ListVersions().Concat(model.Versions.ListRetiredVersions()).OrderBy(v => v.Version))
            {
                VersionProvenance? p;
                try { p = ModelVersionStore.ReadProvenance(v); }
                catch (OnnxTuneException) { p = null; }
                if (p?.UserHashes.Contains(hash, StringComparer.Ordinal) == true) affected.Add(v.Version);
            }
        }
        return new UserDeletionResult(deleted, affected) { DeletedAdapters = adapters };
    }

    public async Task<ModelVersionInfo?> RetireVersionAsync(int version, string reason, CancellationToken cancellationToken = default)
    {
        var serving = await model.Versions.RetireAsync(version, reason, cancellationToken).ConfigureAwait(false);
        Log.VersionRetired(model.Logger, model.Name, version, reason);
        return serving;
    }

    public ValueTask<IReadOnlyList<QuarantinedFeedback>> ListQuarantinedAsync(CancellationToken cancellationToken = default) =>
        Maintenance?.ListQuarantinedAsync(cancellationToken) ?? ValueTask.FromResult<IReadOnlyList<QuarantinedFeedback>>([]);

    public ValueTask<bool> DeleteQuarantinedAsync(long sequence, CancellationToken cancellationToken = default) =>
        Maintenance?.DeleteQuarantinedAsync(sequence, cancellationToken) ?? ValueTask.FromResult(false);
}
