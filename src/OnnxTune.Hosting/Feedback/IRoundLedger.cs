namespace OnnxTune.Hosting.Internal;

/// <summary>State of a training record that a round could not confirm.</summary>
internal enum LedgerState
{
    /// <summary>Deferred by the user cap; not trained yet; waits for a later round.</summary>
    Waiting = 1,

    /// <summary>Trained in a rejected round; retried as new by later rounds until a promotion confirms it.</summary>
    Pending = 2,

    /// <summary>Rejected more than <see cref="GateOptions.MaxRejectedRetries"/> times: kept in the store, no longer trained on.</summary>
    Retired = 3,
}

/// <summary>
/// Tracks training records that are not confirmed (waiting, pending after a rejected round, retired). Records in the
/// ledger are never replayed; a promotion removes its round's records (they are confirmed). Records never in the
/// ledger (older stores, and every record a promoted round trained on) are confirmed. Implemented by
/// <see cref="SqliteFeedbackStore"/>; other stores keep the earlier behaviour (no marking).
/// </summary>
internal interface IRoundLedger
{
    /// <summary>Waiting and pending records (pending ones retried at most <paramref name="maxRetries"/> times), oldest first.</summary>
    ValueTask<IReadOnlyList<FeedbackRecord>> GetUnconfirmedAsync(int maxRetries, CancellationToken cancellationToken);

    /// <summary>
    /// Atomically: confirms (promoted) or marks pending/retired (rejected) the trained records, marks the deferred
    /// records waiting, and moves the watermark to <paramref name="upToSequence"/>.
    /// </summary>
    ValueTask CommitRoundAsync(IReadOnlyCollection<long> trained, IReadOnlyCollection<long> deferred, bool promoted, int maxRetries,
        string watermarkKey, long upToSequence, CancellationToken cancellationToken);

    /// <summary>Counts of ledger records by state.</summary>
    ValueTask<IReadOnlyDictionary<LedgerState, long>> CountLedgerAsync(CancellationToken cancellationToken);

    /// <summary>The state of one record, or null when it is confirmed (or unknown).</summary>
    ValueTask<LedgerState?> GetLedgerStateAsync(long sequence, CancellationToken cancellationToken);

    /// <summary>
    /// The most recent <paramref name="recent"/> held-out records up to <paramref name="upToSequence"/>, plus up to
    /// <paramref name="older"/> older ones spread evenly over classes (deterministic by <paramref name="seed"/>), in sequence order.
    /// </summary>
    ValueTask<IReadOnlyList<FeedbackRecord>> GetHeldOutSampleAsync(long upToSequence, int recent, int older, int seed, CancellationToken cancellationToken);

    /// <summary>Reads the state value <paramref name="key"/>, first storing <paramref name="value"/> if it has none (atomic).</summary>
    ValueTask<string> GetOrAddStateAsync(string key, string value, CancellationToken cancellationToken);
}
