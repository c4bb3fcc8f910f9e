using System.Text.Json;

namespace OnnxTune.Demo;

/// <summary>Loads the in-scope part of CLINC150 (samples/datasets/clinc150, CC BY 3.0).</summary>
internal sealed record Clinc150(IReadOnlyList<(string Text, string Intent)> Train, IReadOnlyList<(string Text, string Intent)> Test, IReadOnlyList<string> Intents)
{
    public static Clinc150 Load(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        List<(string, string)> Split(string key) =>
            doc.RootElement.GetProperty(key).EnumerateArray().Select(e => (e[0].GetString()!, e[1].GetString()!)).ToList();
        var train = Split("train");
        var test = Split("test");
        var intents = train.Select(t => t.Item2).Distinct().Order(StringComparer.Ordinal).ToList();
        return new Clinc150(train, test, intents);
    }

    /// <summary>Finds the dataset by walking up from the app folder (works from bin/ and from the repo root).</summary>
    public static string Locate()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "samples", "datasets", "clinc150", "data_full.json");
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException("samples/datasets/clinc150/data_full.json was not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>Hashed bag of unigrams and bigrams, log1p counts, L2-normalised: a featuriser with no vocabulary to ship.</summary>
internal sealed class HashedBagOfWords(int buckets)
{
    public int Buckets { get; } = buckets;

    public void Featurize(string text, Span<float> destination)
    {
        destination.Clear();
        var tokens = text.ToLowerInvariant().Split((char[])[' ', ',', '.', '?', '!', '\'', '"', ':', ';', '-', '(', ')'], StringSplitOptions.RemoveEmptyEntries);
        for (var i = 0; i < tokens.Length; i++)
        {
            destination[Bucket(tokens[i])] += 1;
            if (i > 0) destination[Bucket(tokens[i - 1] + " " + tokens[i])] += 1;
        }
        double norm = 0;
        for (var i = 0; i < destination.Length; i++)
        {
            if (destination[i] == 0) continue;
            destination[i] = MathF.Log(1 + destination[i]);
            norm += destination[i] * destination[i];
        }
        if (norm > 0)
        {
            var inv = (float)(1 / Math.Sqrt(norm));
            for (var i = 0; i < destination.Length; i++) destination[i] *= inv;
        }
    }

    private int Bucket(string s)
    {
        uint h = 2166136261;
        foreach (var c in s) { h ^= c; h *= 16777619; }
        return (int)(h % (uint)Buckets);
    }
}
