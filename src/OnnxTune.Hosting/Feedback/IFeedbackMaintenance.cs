namespace OnnxTune.Hosting;

/// <summary>A feedback record moved out of training because the engine could not use it.</summary>
/// <param name="Sequence">The record's store sequence number.</param>
/// <param name="Id">The record id.</param>
/// <param name="UserId">The owning user, or <see langword="null"/>.</param>
/// <param name="CreatedAt">When the record was accepted.</param>
/// <param name="QuarantinedAt">When it was quarantined.</param>
/// <param name="Reason">Why (the error that the record caused).</param>
public sealed record QuarantinedFeedback(long Sequence, string Id, string? UserId, DateTimeOffset CreatedAt, DateTimeOffset QuarantinedAt, string Reason);

/// <summary>
/// Maintenance operations of a feedback store beyond <see cref="IFeedbackStore"/>: quarantine of records that fail
/// in a round, the existence check that makes promotion honour deletions, retention bounded by the training
/// watermark, and keyed user hashes for version provenance. <see cref="SqliteFeedbackStore"/> implements it; with
/// a custom store that does not, rounds skip failing records without quarantining them, and provenance and the
/// deletion check are unavailable.
/// </summary>
public interface IFeedbackMaintenance
{
    /// <summary>Moves a record out of the feedback table into quarantine with <paramref name="reason"/>; false when it no longer exists.</summary>
    ValueTask<bool> QuarantineAsync(long sequence, string reason, CancellationToken cancellationToken = default);

    /// <summary>Lists quarantined records, oldest first.</summary>
    ValueTask<IReadOnlyList<QuarantinedFeedback>> ListQuarantinedAsync(CancellationToken cancellationToken = default);

    /// <summary>Deletes a quarantined record for good; false when there is none with that sequence number.</summary>
    ValueTask<bool> DeleteQuarantinedAsync(long sequence, CancellationToken cancellationToken = default);

    /// <summary>The sequence numbers among <paramref name="sequences"/> that are no longer stored (deleted or quarantined).</summary>
    ValueTask<IReadOnlyList<long>> GetMissingAsync(IReadOnlyCollection<long> sequences, CancellationToken cancellationToken = default);

    /// <summary>Deletes records accepted before <paramref name="cutoff"/> whose sequence is at most <paramref name="atOrBelowSequence"/>; returns how many.</summary>
    ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, long atOrBelowSequence, CancellationToken cancellationToken = default);

    /// <summary>A keyed hash (HMAC-SHA256 with a secret kept in the store) of a user id: it names the user in provenance without storing the id.</summary>
    string HashUserId(string userId);
}
