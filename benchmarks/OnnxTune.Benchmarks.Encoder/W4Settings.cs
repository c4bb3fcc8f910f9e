using System.Text.Json;
using System.Text.Json.Serialization;

namespace OnnxTune.Benchmarks.Encoder;

/// <summary>Settings of one W4 run, written by <c>prepare</c> to <c>w4.json</c> and read by all three sides.</summary>
internal sealed record W4Settings
{
    public const string FileName = "w4.json";
    public const string DataFileName = "w4-data.safetensors";
    public const string ModelFileName = "model.onnx";

    public int TrainExamples { get; init; }
    public int TestExamples { get; init; }
    public int Classes { get; init; }
    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 2e-4;
    public double WeightDecay { get; init; } = 0.01;
    public int TrainableLayers { get; init; } = 2;
    public int MaxLength { get; init; } = 64;
    /// <summary>Examples are padded to a multiple of this for OnnxTune's cache (the hosting default); peers pad per batch.</summary>
    public int LengthBucket { get; init; } = 16;
    public int Seed { get; init; } = 1;
    public int Threads { get; init; } = 2;
    public float Dropout { get; init; } = 0.1f;
    /// <summary>The encoder + head inference model (dropout off); peers read their initial weights from its initializers.</summary>
    public string Model { get; init; } = ModelFileName;
    /// <summary>Parameters that train (the head and encoder layers 4–5), as ONNX initializer names.</summary>
    public IReadOnlyList<string> Trainable { get; init; } = [];
    public string Tokenizer { get; init; } = "";

    public static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    public static W4Settings Load(string work) =>
        JsonSerializer.Deserialize<W4Settings>(File.ReadAllText(Path.Combine(work, FileName)), Json)
        ?? throw new InvalidDataException($"{Path.Combine(work, FileName)} is empty.");
}
