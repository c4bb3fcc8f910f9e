using System.Security.Cryptography;
using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Training.Checkpoints;

/// <summary>Contents of <c>checkpoint.json</c>.</summary>
public sealed record CheckpointMetadata
{
    /// <summary>The current checkpoint format version.</summary>
    public const int CurrentFormatVersion = 1;

    /// <summary>Format version.</summary>
    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>Completed optimizer updates.</summary>
    public long Step { get; init; }

    /// <summary>Learning rate for the next update (without a schedule).</summary>
    public double LearningRate { get; init; }

    /// <summary>Learning-rate schedule, if one is attached.</summary>
    public LearningRateScheduleState? Schedule { get; init; }

    /// <summary>Optimizer settings the state tensors belong to.</summary>
    public OptimizerSpec Optimizer { get; init; } = new();

    /// <summary>Trainable parameters (names and shapes), in manifest order.</summary>
    public IReadOnlyList<CheckpointTensor> Parameters { get; init; } = [];

    /// <summary>Optimizer state tensors (<c>&lt;p&gt;&lt;suffix&gt;</c>).</summary>
    public IReadOnlyList<CheckpointTensor> OptimizerStates { get; init; } = [];

    /// <summary>Non-trainable state tensors (BatchNormalization running statistics); empty in older checkpoints.</summary>
    public IReadOnlyList<CheckpointTensor> NonTrainableState { get; init; } = [];

    /// <summary>SHA-256 (hex) of <c>tensors.safetensors</c>; detects a half-finished save.</summary>
    public string TensorsSha256 { get; init; } = "";

    /// <summary>Caller-supplied properties.</summary>
    public IReadOnlyDictionary<string, string> UserProperties { get; init; } = new Dictionary<string, string>();
}

/// <summary>Name, element type and shape of a checkpoint tensor.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="ElementType">ONNX element type name (<c>float</c>, <c>double</c>).</param>
/// <param name="Shape">Dims.</param>
public sealed record CheckpointTensor(string Name, string ElementType, IReadOnlyList<long> Shape);

/// <summary>
/// Reads and writes checkpoint folders: <c>tensors.safetensors</c> (parameters and optimizer states) and
/// <c>checkpoint.json</c>. Each file is replaced atomically, tensors first; the JSON, written last, carries the
/// tensors' hash, so an interrupted save is detected on load.
/// </summary>
public static class CheckpointStore
{
    /// <summary>Tensor file name.</summary>
    public const string TensorsFileName = "tensors.safetensors";

    /// <summary>Metadata file name.</summary>
    public const string MetadataFileName = "checkpoint.json";

    /// <summary>True when <paramref name="directory"/> holds a checkpoint.</summary>
    public static bool Exists(string directory) => File.Exists(Path.Combine(directory, MetadataFileName));

    /// <summary>Writes a checkpoint; <see cref="CheckpointMetadata.TensorsSha256"/> is filled in here.</summary>
    public static void Save(string directory, CheckpointMetadata metadata, IEnumerable<SafeTensor> tensors)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(metadata);
        Directory.CreateDirectory(directory);
        var tensorsPath = Path.Combine(directory, TensorsFileName);
        new SafeTensorsFile(tensors, new Dictionary<string, string> { ["format"] = "pt", ["producer"] = "OnnxTune" }).Write(tensorsPath);
        var final = metadata with { TensorsSha256 = Sha256(tensorsPath) };
        AtomicFile.WriteAllText(Path.Combine(directory, MetadataFileName), JsonSerializer.Serialize(final, ArtifactManifest.JsonOptions));
    }

    /// <summary>Reads a checkpoint folder.</summary>
    /// <exception cref="CheckpointFormatException">A file is missing, unreadable, or the tensors do not match the metadata.</exception>
    public static (CheckpointMetadata Metadata, SafeTensorsFile Tensors) Load(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var metaPath = Path.Combine(directory, MetadataFileName);
        var tensorsPath = Path.Combine(directory, TensorsFileName);
        if (!File.Exists(metaPath))
            throw new CheckpointFormatException($"'{directory}' is not a checkpoint folder: {MetadataFileName} is missing.");
        if (!File.Exists(tensorsPath))
            throw new CheckpointFormatException($"Checkpoint '{directory}': {TensorsFileName} is missing.");
        CheckpointMetadata meta;
        try
        {
            meta = JsonSerializer.Deserialize<CheckpointMetadata>(File.ReadAllText(metaPath), ArtifactManifest.JsonOptions)
                ?? throw new CheckpointFormatException($"{metaPath} is empty.");
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException($"{metaPath} is not valid checkpoint JSON: {e.Message}", e);
        }
        if (meta.FormatVersion != CheckpointMetadata.CurrentFormatVersion)
            throw new CheckpointFormatException($"{metaPath}: format_version {meta.FormatVersion} is not supported (expected {CheckpointMetadata.CurrentFormatVersion}).");
        if (!string.IsNullOrEmpty(meta.TensorsSha256))
        {
            var actual = Sha256(tensorsPath);
            if (!string.Equals(actual, meta.TensorsSha256, StringComparison.OrdinalIgnoreCase))
                throw new CheckpointFormatException($"Checkpoint '{directory}': {TensorsFileName} (sha256 {actual[..12]}…) is not the file {MetadataFileName} describes (sha256 {meta.TensorsSha256[..Math.Min(12, meta.TensorsSha256.Length)]}…); the save was interrupted or the files were mixed.");
        }
        SafeTensorsFile tensors;
        try { tensors = SafeTensorsFile.Read(tensorsPath); }
        catch (SafeTensorsFormatException e) { throw new CheckpointFormatException($"Checkpoint '{directory}': {e.Message}", e); }
        foreach (var t in meta.Parameters.Concat(meta.OptimizerStates).Concat(meta.NonTrainableState ?? []))
        {
            var st = tensors.Find(t.Name) ?? throw new CheckpointFormatException($"Checkpoint '{directory}': {MetadataFileName} lists tensor '{t.Name}' but {TensorsFileName} lacks it.");
            if (!st.Shape.SequenceEqual(t.Shape))
                throw new CheckpointFormatException($"Checkpoint '{directory}': tensor '{t.Name}' has shape [{string.Join(",", st.Shape)}] in {TensorsFileName} but [{string.Join(",", t.Shape)}] in {MetadataFileName}.");
        }
        return (meta, tensors);
    }

    private static string Sha256(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }
}
