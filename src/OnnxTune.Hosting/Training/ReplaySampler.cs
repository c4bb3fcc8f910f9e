namespace OnnxTune.Hosting.Training;

/// <summary>Draws the replay part of a round: class-balanced from the base model's replay set, the rest from earlier feedback.</summary>
internal static class ReplaySampler
{
    /// <summary>
    /// Up to <paramref name="count"/> records, classes taken in turn (each class's records in a seeded random order),
    /// so that every known class is rehearsed about equally however skewed the set is.
    /// </summary>
    public static List<FeedbackRecord> ClassBalanced(IReadOnlyList<FeedbackRecord> records, int count, int seed)
    {
        if (count <= 0 || records.Count == 0) return [];
        if (count >= records.Count) return [.. records];
        var rng = new Random(seed);
        var classes = records.GroupBy(r => r.LabelIndex).Select(g =>
        {
            var items = g.ToArray();
            rng.Shuffle(items);
            return new Queue<FeedbackRecord>(items);
        }).ToArray();
        rng.Shuffle(classes);
        var result = new List<FeedbackRecord>(count);
        while (result.Count < count)
            foreach (var q in classes)
            {
                if (result.Count == count) break;
                if (q.Count > 0) result.Add(q.Dequeue());
            }
        return result;
    }

    /// <summary>How many replay records come from the base replay set and how many from the store.</summary>
    public static (int FromReplaySet, int FromStore) Split(int replayCount, int replaySetSize, double baseShare)
    {
        if (replaySetSize == 0) return (0, replayCount);
        var fromSet = (int)Math.Round(replayCount * baseShare);
        return (fromSet, replayCount - fromSet);
    }
}
