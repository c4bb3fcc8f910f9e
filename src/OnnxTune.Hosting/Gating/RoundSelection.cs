using System.Globalization;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Which records a round trains on as new: the unconfirmed ones (deferred by the user cap, or trained in a rejected
/// round and retried) plus the records since the watermark, with one user's share capped.
/// </summary>
/// <param name="Selected">Records the round trains on as new, in sequence order.</param>
/// <param name="Deferred">Records over the user cap; they wait for a later round.</param>
/// <param name="NewSinceWatermark">How many of the candidates arrived since the watermark.</param>
/// <param name="Retried">How many selected records were trained in a rejected round before.</param>
internal sealed record RoundSelection(IReadOnlyList<FeedbackRecord> Selected, IReadOnlyList<FeedbackRecord> Deferred, int NewSinceWatermark, int Retried)
{
    public static async Task<RoundSelection> SelectAsync(IFeedbackStore store, GateOptions options, long watermark, long upTo, CancellationToken ct)
    {
        var fresh = await store.GetTrainingSinceAsync(watermark, upTo, ct).ConfigureAwait(false);
        IReadOnlyList<FeedbackRecord> unconfirmed = store is IRoundLedger ledger
            ? await ledger.GetUnconfirmedAsync(options.MaxRejectedRetries, ct).ConfigureAwait(false)
            : [];
        var freshSeqs = fresh.Select(r => r.Sequence).ToHashSet();
        var pool = unconfirmed.Where(r => !freshSeqs.Contains(r.Sequence)).Concat(fresh).OrderBy(r => r.Sequence).ToList();
        var (selected, deferred) = Cap(pool, options.MaxUserShare);
        var retried = selected.Count(r => !freshSeqs.Contains(r.Sequence));
        return new RoundSelection(selected, deferred, fresh.Count, retried);
    }

    /// <summary>
    /// Caps each user's records at L, the largest count with L ≤ max(share, 1/users)·(records selected with that L);
    /// a user's oldest records go first. Records without a user id are never capped; one user alone is not capped.
    /// </summary>
    internal static (List<FeedbackRecord> Selected, List<FeedbackRecord> Deferred) Cap(IReadOnlyList<FeedbackRecord> pool, double share)
    {
        var byUser = pool.Where(r => r.UserId is not null).GroupBy(r => r.UserId!, StringComparer.Ordinal).ToList();
        if (byUser.Count < 2 || share >= 1) return ([.. pool], []);
        var anonymous = pool.Count(r => r.UserId is null);
        var effective = Math.Max(share, 1.0 / byUser.Count);
        var counts = byUser.Select(g => g.Count()).ToArray();
        var max = counts.Max();
        long Selected(int l) => anonymous + counts.Sum(n => (long)Math.Min(n, l));
        var limit = max;
        while (limit > 1 && Math.Min(max, limit) > effective * Selected(limit) + 1e-9) limit--;
        if (limit >= max) return ([.. pool], []);
        var keep = new HashSet<long>();
        foreach (var g in byUser)
            foreach (var r in g.OrderBy(r => r.Sequence).Take(limit)) keep.Add(r.Sequence);
        var selected = new List<FeedbackRecord>();
        var deferred = new List<FeedbackRecord>();
        foreach (var r in pool)
            (r.UserId is null || keep.Contains(r.Sequence) ? selected : deferred).Add(r);
        return (selected, deferred);
    }

    /// <summary>Confirms or marks the round's records and moves the watermark (atomically when the store keeps a ledger).</summary>
    public async Task CommitAsync(IFeedbackStore store, bool promoted, int maxRetries, string watermarkKey, long upTo)
    {
        if (store is IRoundLedger ledger)
            await ledger.CommitRoundAsync(Selected.Select(r => r.Sequence).ToArray(), Deferred.Select(r => r.Sequence).ToArray(), promoted,
                maxRetries, watermarkKey, upTo, CancellationToken.None).ConfigureAwait(false);
        else
            await store.SetStateAsync(watermarkKey, upTo.ToString(CultureInfo.InvariantCulture), CancellationToken.None).ConfigureAwait(false);
    }
}
