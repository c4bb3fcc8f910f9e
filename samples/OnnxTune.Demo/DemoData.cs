using System.Text.Json;
using OnnxTune.Samples;

namespace OnnxTune.Demo;

/// <summary>One wave of user feedback: corrections about known and new domains, or a buggy client's random labels.</summary>
internal sealed record Wave(int Number, string Domain, bool Poisoned, IReadOnlyList<(string Text, string Intent, string User)> Records);

/// <summary>
/// The demo's story on CLINC150: per known intent, the first utterances train the shipped model, the next few form the
/// golden set, and the rest are what users later send about them; the new domains' utterances are taught by feedback.
/// Accuracy is measured on CLINC150's test split.
/// </summary>
internal sealed record DemoData(
    IReadOnlyList<string> KnownDomains,
    IReadOnlyList<string> NewDomains,
    IReadOnlyList<Utterance> BaseTraining,
    IReadOnlyList<Utterance> Golden,
    IReadOnlyList<Utterance> TestKnown,
    IReadOnlyList<Utterance> TestNew,
    IReadOnlyList<Wave> Waves)
{
    public const string BuggyClient = "buggy-client";

    public static DemoData Create(Clinc150 data, DemoSettings s)
    {
        var known = data.Domains.Take(5).Select(d => d.Domain).ToList();
        var fresh = data.Domains.Skip(5).Select(d => d.Domain).ToList();
        bool IsKnown(string intent) => known.Contains(data.DomainOf[intent]);
        var byIntent = data.Train.GroupBy(u => u.Intent, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        var baseTraining = byIntent.Where(p => IsKnown(p.Key)).SelectMany(p => p.Value.Take(s.TrainPerIntent)).ToList();
        var golden = byIntent.Where(p => IsKnown(p.Key)).SelectMany(p => p.Value.Skip(s.TrainPerIntent).Take(s.GoldenPerIntent)).ToList();
        var test = Clinc150.Take(data.Test, s.TestPerIntent);

        var rng = new Random(2024);
        var knownPool = Shuffle(rng, byIntent.Where(p => IsKnown(p.Key)).SelectMany(p => p.Value.Skip(s.TrainPerIntent + s.GoldenPerIntent)));
        var newPools = fresh.ToDictionary(d => d, d => Shuffle(rng, byIntent.Where(p => data.DomainOf[p.Key] == d).SelectMany(p => p.Value)), StringComparer.Ordinal);
        var nextKnown = 0;
        var nextNew = fresh.ToDictionary(d => d, _ => 0, StringComparer.Ordinal);
        var waves = new List<Wave>();
        var poisonAfter = s.Poison ? Math.Max(1, s.Rounds / 2) : -1;
        var count = (int)(s.WaveSize * 1.5) + 20; // enough for the wave's training records plus the held-out share
        for (var w = 0; w < s.Rounds; w++)
        {
            // The new domains launch evenly over the waves: with fewer waves than domains a wave brings several.
            var first = Math.Min(fresh.Count - 1, w * fresh.Count / s.Rounds);
            var launching = fresh.GetRange(first, Math.Max(1, (w + 1) * fresh.Count / s.Rounds - first));
            var records = new List<(string, string, string)>(count);
            var nextDomain = 0;
            for (var i = 0; i < count; i++)
            {
                var domain = launching[nextDomain];
                var fromKnown = rng.NextDouble() < s.OldShare;
                if (!fromKnown) nextDomain = (nextDomain + 1) % launching.Count;
                var u = fromKnown ? knownPool[nextKnown++ % knownPool.Count] : newPools[domain][nextNew[domain]++ % newPools[domain].Count];
                records.Add((u.Text, u.Intent, $"user-{rng.Next(200)}"));
            }
            waves.Add(new Wave(waves.Count + 1, string.Join("+", launching), false, records));
            if (w + 1 == poisonAfter)
            {
                // Ordinary traffic, but the client attaches a random one of the 150 intents to every utterance.
                var poisoned = new List<(string, string, string)>(count);
                for (var i = 0; i < count; i++)
                    poisoned.Add((knownPool[nextKnown++ % knownPool.Count].Text, data.Intents[rng.Next(data.Intents.Count)], BuggyClient));
                waves.Add(new Wave(waves.Count + 1, "buggy client", true, poisoned));
            }
        }
        return new DemoData(known, fresh, baseTraining, golden,
            test.Where(u => IsKnown(u.Intent)).ToList(), test.Where(u => !IsKnown(u.Intent)).ToList(), waves);
    }

    /// <summary>The golden set in the format hosting reads: one <c>{"text", "label"}</c> object per line.</summary>
    public static void WriteGoldenSet(string path, IEnumerable<Utterance> golden)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllLines(path, golden.Select(u => JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = u.Text, ["label"] = u.Intent })));
    }

    private static List<Utterance> Shuffle(Random rng, IEnumerable<Utterance> items)
    {
        var a = items.ToArray();
        rng.Shuffle(a);
        return [.. a];
    }
}
