namespace OnnxTune.Hosting.Internal;

/// <summary>
/// A registry of versions shared by several app instances (for example in a database server). The local
/// <see cref="ModelVersionStore"/> stays the replica every instance serves from; it calls these hooks so that
/// version numbers, the serving pointer and retirements are decided in one place for the whole fleet. Without a
/// registry (the default) the store is local only and no hook runs.
/// </summary>
internal interface ISharedVersionRegistry
{
    /// <summary>
    /// Brings the local replica up to the shared state: imports kept versions that are missing (or differ) locally,
    /// marks retired ones. Returns the shared serving version (0: the base model), or null when none was ever set.
    /// </summary>
    int? Synchronize(ModelVersionStore local);

    /// <summary>The shared serving version (0: the base model), or null when none was ever set; a cheap read.</summary>
    int? ReadCurrent();

    /// <summary>The next version number fleet-wide (at least <paramref name="localNext"/>).</summary>
    int NextVersion(int localNext);

    /// <summary>Publishes a version folder written locally (files, then metadata); it is not serving yet. Returns its shared id.</summary>
    /// <exception cref="VersionPromotionRefusedException">This instance may not add versions (it does not hold the trainer lease).</exception>
    string Publish(ModelVersionInfo version);

    /// <summary>
    /// Moves the shared pointer to <paramref name="version"/> (0: the base model), atomically for every instance. A
    /// promotion (a version this instance just added) is fenced: it needs the trainer lease and
    /// <paramref name="expected"/> to still be the shared serving version.
    /// </summary>
    /// <exception cref="VersionPromotionRefusedException">The promotion lost the lease or the pointer moved meanwhile.</exception>
    void SetCurrent(int version, int? expected, bool promotion);

    /// <summary>Records a retirement for the fleet.</summary>
    void Retire(int version, string reason);

    /// <summary>Forgets a version that was published but never served (its activation failed); no-op for a promoted one.</summary>
    void Discard(int version);

    /// <summary>A version was pruned locally; the registry may drop it when it is not among its kept versions.</summary>
    void Pruned(int version);
}

/// <summary>A shared registry refused a promotion (the trainer lease was lost, or another instance moved the pointer).</summary>
internal sealed class VersionPromotionRefusedException(string message) : OnnxTuneException(message);

/// <summary>
/// One trainer at a time among app instances sharing a store: only the holder runs rounds, the others serve.
/// Without a lease (the default) the single process always trains.
/// </summary>
internal interface ITrainerLease
{
    /// <summary>Takes or renews the lease; true when this instance holds it now and may run a round.</summary>
    ValueTask<bool> TryHoldAsync(CancellationToken cancellationToken);
}
