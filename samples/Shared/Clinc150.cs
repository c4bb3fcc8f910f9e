using System.Text.Json;

namespace OnnxTune.Samples;

/// <summary>One labelled utterance.</summary>
internal readonly record struct Utterance(string Text, string Intent);

/// <summary>The in-scope part of CLINC150 (samples/datasets/clinc150, CC BY 3.0): 10 domains × 15 intents.</summary>
internal sealed class Clinc150
{
    private Clinc150(List<Utterance> train, List<Utterance> test, List<string> intents, List<(string Domain, List<string> Intents)> domains)
    {
        Train = train;
        Test = test;
        Intents = intents;
        Domains = domains;
        DomainOf = domains.SelectMany(d => d.Intents.Select(i => (i, d.Domain))).ToDictionary(p => p.i, p => p.Domain, StringComparer.Ordinal);
    }

    public IReadOnlyList<Utterance> Train { get; }
    public IReadOnlyList<Utterance> Test { get; }

    /// <summary>Intent names in class-index order: domain by domain, in <c>domains.json</c> order.</summary>
    public IReadOnlyList<string> Intents { get; }

    public IReadOnlyList<(string Domain, List<string> Intents)> Domains { get; }
    public IReadOnlyDictionary<string, string> DomainOf { get; }

    public static Clinc150 Load(string folder)
    {
        using var data = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, "data_full.json")));
        using var domainsDoc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, "domains.json")));
        var domains = domainsDoc.RootElement.EnumerateObject()
            .Select(p => (p.Name, p.Value.EnumerateArray().Select(e => e.GetString()!).ToList())).ToList();
        var intents = domains.SelectMany(d => d.Item2).ToList();
        List<Utterance> Split(string key) =>
            data.RootElement.GetProperty(key).EnumerateArray().Select(e => new Utterance(e[0].GetString()!, e[1].GetString()!)).ToList();
        return new Clinc150(Split("train"), Split("test"), intents, domains);
    }

    /// <summary>The first <paramref name="perIntent"/> utterances of every intent, in file order (deterministic).</summary>
    public static List<Utterance> Take(IEnumerable<Utterance> rows, int perIntent) =>
        rows.GroupBy(r => r.Intent, StringComparer.Ordinal).SelectMany(g => g.Take(perIntent)).ToList();

    /// <summary>Finds <c>samples/datasets/clinc150</c> by walking up from the app folder, then from the working directory.</summary>
    public static string Locate()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "samples", "datasets", "clinc150");
                if (File.Exists(Path.Combine(candidate, "data_full.json"))) return candidate;
            }
        throw new FileNotFoundException("samples/datasets/clinc150/data_full.json was not found above " + AppContext.BaseDirectory);
    }

    /// <summary>The repository root (the folder holding OnnxTune.sln), or the working directory.</summary>
    public static string RepoRoot()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "OnnxTune.sln"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}
