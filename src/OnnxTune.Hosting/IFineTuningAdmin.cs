namespace OnnxTune.Hosting;

/// <summary>The outcome of deleting a user's feedback.</summary>
/// <param name="DeletedRecords">Records deleted (feedback and quarantine).</param>
/// <param name="AffectedVersions">Versions on disk whose provenance names the user (trained on their records), oldest first; retire them to stop serving or rolling back to them.</param>
public sealed record UserDeletionResult(int DeletedRecords, IReadOnlyList<int> AffectedVersions)
{
    /// <summary>Gets how many partition keys' adapters were deleted (every version of the key whose id is the user's, or of any key whose adapters trained on the user's records); they retrain from the remaining feedback.</summary>
    public int DeletedAdapters { get; init; }
}

/// <summary>
/// Administration of one fine-tuned model (inject it, keyed by model name): user deletion that reports the
/// versions trained on the user's records, version retirement, and the quarantine of records that failed in a round.
/// </summary>
public interface IFineTuningAdmin
{
    /// <summary>
    /// Deletes every record of a user and lists the versions trained on them. Serialised with promotion: a round
    /// that read the user's records and has not promoted yet discards its candidate.
    /// </summary>
    /// <exception cref="FeedbackStoreException">The store failed.</exception>
    Task<UserDeletionResult> DeleteUserAsync(string userId, CancellationToken cancellationToken = default);

    /// <summary>Retires a version (never served or rolled back to again); returns the version serving afterwards (null: the base model).</summary>
    /// <exception cref="ModelVersionNotFoundException">No such version on disk.</exception>
    Task<ModelVersionInfo?> RetireVersionAsync(int version, string reason, CancellationToken cancellationToken = default);

    /// <summary>
    /// Runs a fine-tuning round now, whatever the trigger thresholds (<c>MinNewFeedback</c>, <c>MaxInterval</c>,
    /// <c>OnlyWhenIdle</c>), after any round already running, and returns how it ended: its outcome, gate decision and
    /// <see cref="RoundStatistics"/>. Null when there is no new feedback (or the round was cancelled).
    /// </summary>
    /// <exception cref="InvalidOperationException">No training engine is registered, or the host has not started.</exception>
    Task<RoundCompletedEventArgs?> RunRoundAsync(CancellationToken cancellationToken = default);

    /// <summary>Lists quarantined records (empty when the store does not support quarantine).</summary>
    ValueTask<IReadOnlyList<QuarantinedFeedback>> ListQuarantinedAsync(CancellationToken cancellationToken = default);

    /// <summary>Deletes a quarantined record; false when there is none with that sequence number.</summary>
    ValueTask<bool> DeleteQuarantinedAsync(long sequence, CancellationToken cancellationToken = default);
}
