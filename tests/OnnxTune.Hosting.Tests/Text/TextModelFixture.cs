using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Labels;
using OnnxTune.Text.MiniLm;

namespace OnnxTune.Hosting.Tests.Text;

/// <summary>
/// Real all-MiniLM-L6-v2 with a 3-class head (only <c>head.dense.*</c> trainable, as <c>--trainable-layers 0</c>),
/// saved as an artifacts folder like <c>onnxtune artifacts --head classification --labels</c> writes it
/// (labels.json, vocab.txt, tokenizer properties with max length 64), and CLINC150 examples of three intents.
/// </summary>
public sealed class TextModelFixture : IDisposable
{
    public static readonly string[] Intents = ["alarm", "translate", "weather"];

    private readonly TempDir _dir = new();

    public TextModelFixture()
    {
        var files = MiniLmModel.Extract(Path.Combine(AppContext.BaseDirectory, "minilm-cache"));
        var head = TaskHeadBuilder.Build(OnnxModelReader.Load(files.ModelPath), new TaskHeadOptions { Outputs = Intents.Length, Seed = 1 });
        var settings = new TextModelSettings
        {
            Kind = TaskHeadKind.SequenceClassification,
            Outputs = Intents.Length,
            Pooling = head.Options.Pooling,
            Dropout = head.Options.Dropout,
            OutputName = head.OutputName,
            LabelsFile = "labels.json",
            VocabularyFile = "vocab.txt",
            MaxLength = 64,
            LowerCase = true,
            TrainableLayers = 0,
        };
        var built = TaskHeadArtifacts.Build(head.Model, new ArtifactOptions
        {
            Selection = new ParameterSelection { TrainableNames = [.. head.HeadParameters] },
            Loss = head.Loss,
            Properties = settings.ToProperties(),
        });
        ArtifactsPath = _dir.Sub("artifacts");
        ArtifactBuilder.Save(built, ArtifactsPath);
        new LabelMap(Intents).Save(Path.Combine(ArtifactsPath, "labels.json"));
        File.Copy(files.VocabularyPath, Path.Combine(ArtifactsPath, "vocab.txt"));
        Manifest = ArtifactManifest.Load(ArtifactsPath);

        var clinc = Path.Combine(RepoRoot(), "samples", "datasets", "clinc150");
        Train = Read(Path.Combine(clinc, "train.jsonl"), 10);
        Test = Read(Path.Combine(clinc, "test.jsonl"), 10);
        GoldenSetPath = _dir.Sub("golden.jsonl");
        File.WriteAllLines(GoldenSetPath, Test.Select(e => JsonSerializer.Serialize(new { text = e.Text, label = e.Label })));
    }

    public string ArtifactsPath { get; }

    public ArtifactManifest Manifest { get; }

    /// <summary>10 training examples per intent, intents interleaved.</summary>
    public IReadOnlyList<(string Text, string Label)> Train { get; }

    /// <summary>10 test examples per intent.</summary>
    public IReadOnlyList<(string Text, string Label)> Test { get; }

    public string GoldenSetPath { get; }

    public void Dispose() => _dir.Dispose();

    private static List<(string Text, string Label)> Read(string path, int perIntent)
    {
        var byIntent = Intents.ToDictionary(i => i, _ => new List<string>(), StringComparer.Ordinal);
        foreach (var line in File.ReadLines(path))
        {
            using var doc = JsonDocument.Parse(line);
            var label = doc.RootElement.GetProperty("label").GetString()!;
            if (byIntent.TryGetValue(label, out var list) && list.Count < perIntent)
                list.Add(doc.RootElement.GetProperty("text").GetString()!);
        }
        return Enumerable.Range(0, perIntent).SelectMany(i => Intents.Select(l => (byIntent[l][i], l))).ToList();
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "OnnxTune.sln"))) return d.FullName;
        throw new InvalidOperationException($"No OnnxTune.sln above {AppContext.BaseDirectory}.");
    }
}

[CollectionDefinition(Name)]
public sealed class TextModelCollection : ICollectionFixture<TextModelFixture>
{
    public const string Name = "Hosting text model";
}
