namespace OnnxTune.Hosting.Internal;

/// <summary>A deterministic sample spread evenly over classes (round-robin over per-class shuffles), in input order.</summary>
internal static class StratifiedSample
{
    public static List<T> Take<T>(IReadOnlyList<T> items, Func<T, long> label, int count, int seed)
    {
        if (count >= items.Count) return [.. items];
        if (count <= 0) return [];
        var rng = new Random(seed);
        var groups = Enumerable.Range(0, items.Count).GroupBy(i => label(items[i])).OrderBy(g => g.Key)
            .Select(g => { var a = g.ToArray(); rng.Shuffle(a); return a; }).ToList();
        var chosen = new List<int>(count);
        for (var round = 0; chosen.Count < count; round++)
            foreach (var g in groups)
            {
                if (round < g.Length) chosen.Add(g[round]);
                if (chosen.Count == count) break;
            }
        chosen.Sort();
        return chosen.Select(i => items[i]).ToList();
    }
}
