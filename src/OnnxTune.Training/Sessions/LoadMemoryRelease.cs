namespace OnnxTune.Training.Sessions;

/// <summary>
/// Returns the transient managed memory of opening a session (parsed models, weight copies) to the operating system.
/// Training allocates almost nothing per step, so without a collection that garbage would stay resident for the
/// whole run.
/// </summary>
internal static class LoadMemoryRelease
{
    /// <summary>Below this much allocation while opening, a collection is not worth it.</summary>
    internal const long ThresholdBytes = 32L << 20;

    /// <summary>
    /// Starts one full collection when more than <see cref="ThresholdBytes"/> were allocated since
    /// <paramref name="allocatedBefore"/>. Background (not blocking) where the runtime allows it: sessions open
    /// beside serving threads, which a blocking full collection would pause.
    /// </summary>
    internal static bool AfterOpen(long allocatedBefore)
    {
        if (GC.GetTotalAllocatedBytes(precise: false) - allocatedBefore < ThresholdBytes) return false;
        GC.Collect(2, GCCollectionMode.Forced, blocking: false);
        return true;
    }
}
