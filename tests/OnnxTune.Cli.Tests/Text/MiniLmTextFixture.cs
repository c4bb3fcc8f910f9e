using System.Text.Json;
using OnnxTune.Text.MiniLm;

namespace OnnxTune.Cli.Tests.Text;

/// <summary>
/// Real all-MiniLM-L6-v2 (extracted once into the test output) copied with its vocab.txt into a temp folder, a
/// CLINC150 label list, a 300-example training subset and a 150-example test subset as JSON Lines, and one artifacts
/// folder (150-class head + top 2 layers) shared by the tests.
/// </summary>
public sealed class MiniLmTextFixture : IDisposable
{
    private readonly TempDir _dir = new();

    public MiniLmTextFixture()
    {
        var files = MiniLmModel.Extract(Path.Combine(AppContext.BaseDirectory, "minilm-cache"));
        File.Copy(files.ModelPath, _dir["model.onnx"]);
        File.Copy(files.VocabularyPath, _dir["vocab.txt"]);

        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Repo.Root, "samples", "datasets", "clinc150", "data_full.json")));
        var train = Examples(doc, "train");
        var test = Examples(doc, "test");
        Intents = train.Select(e => e.Intent).Distinct().Order(StringComparer.Ordinal).ToList();
        File.WriteAllLines(_dir["labels.txt"], Intents);
        var rng = new Random(5);
        WriteJsonLines(_dir["train300.jsonl"], train.OrderBy(_ => rng.Next()).Take(300));
        WriteJsonLines(_dir["test150.jsonl"], test.OrderBy(_ => rng.Next()).Take(150));

        ArtifactsRun = CliRunner.Run(_dir.Path, "artifacts", "model.onnx", "--out", "art", "--head", "classification",
            "--labels", "labels.txt", "--trainable-layers", "2", "--max-length", "64").Expect(0);
    }

    public string Dir => _dir.Path;

    public string this[string relative] => _dir[relative];

    public IReadOnlyList<string> Intents { get; }

    internal CliRun ArtifactsRun { get; }

    public void Dispose() => _dir.Dispose();

    private static List<(string Text, string Intent)> Examples(JsonDocument doc, string split) =>
        doc.RootElement.GetProperty(split).EnumerateArray().Select(e => (e[0].GetString()!, e[1].GetString()!)).ToList();

    private static void WriteJsonLines(string path, IEnumerable<(string Text, string Intent)> examples) =>
        File.WriteAllLines(path, examples.Select(e => JsonSerializer.Serialize(new { text = e.Text, label = e.Intent })));
}
