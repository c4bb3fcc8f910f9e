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
                ?? throw new CheckpointFormatException($"{metaPath} holds JSON null; expected a checkpoint object.");
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException($"{metaPath} is not valid checkpoint JSON: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException)
        {
            throw new CheckpointFormatException($"Cannot read {metaPath}: {e.Message}", e);
        }
        Validate(meta, metaPath);
        string actual;
        try { actual = Sha256(tensorsPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException)
        {
            throw new CheckpointFormatException($"Checkpoint '{directory}': cannot read {TensorsFileName}: {e.Message}", e);
        }
        if (!string.Equals(actual, meta.TensorsSha256, StringComparison.OrdinalIgnoreCase))
            throw new CheckpointFormatException($"Checkpoint '{directory}': {TensorsFileName} (sha256 {actual[..12]}…) is not the file {MetadataFileName} describes (sha256 {meta.TensorsSha256[..12]}…); the save was interrupted or the files were mixed.");
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

    private static readonly string[] ScheduleKinds = ["constant", "constant-with-warmup", "linear", "cosine"];

    /// <summary>Rejects what the JSON serializer lets through: null or missing fields, bad dims, a missing hash.</summary>
    private static void Validate(CheckpointMetadata meta, string metaPath)
    {
        CheckpointFormatException Bad(string field, string expected) =>
            new($"{metaPath}: field '{field}' {expected}.");
        if (meta.FormatVersion != CheckpointMetadata.CurrentFormatVersion)
            throw new CheckpointFormatException($"{metaPath}: format_version {meta.FormatVersion} is not supported (expected {CheckpointMetadata.CurrentFormatVersion}).");
        if (meta.Step < 0) throw Bad("step", $"is {meta.Step}; expected an integer >= 0");
        if (!double.IsFinite(meta.LearningRate) || meta.LearningRate < 0)
            throw Bad("learning_rate", $"is {meta.LearningRate}; expected a finite number >= 0");
        // The hash is required: without it a half-finished save (new tensors, old JSON) would load silently.
        if (string.IsNullOrEmpty(meta.TensorsSha256))
            throw Bad("tensors_sha256", $"is missing or empty; expected the SHA-256 (64 hex digits) of {TensorsFileName}, so an interrupted save can be detected");
        if (meta.TensorsSha256.Length != 64 || !meta.TensorsSha256.All(char.IsAsciiHexDigit))
            throw Bad("tensors_sha256", $"is '{Shorten(meta.TensorsSha256)}'; expected 64 hex digits");
        if (meta.Optimizer is null) throw Bad("optimizer", "is null; expected an object (kind, learning_rate, ...)");
        if (meta.Schedule is { } schedule)
        {
            if (schedule.Kind is null || !ScheduleKinds.Contains(schedule.Kind))
                throw Bad("schedule.kind", $"is {(schedule.Kind is null ? "missing" : $"'{Shorten(schedule.Kind)}'")}; expected {string.Join(", ", ScheduleKinds)}");
            if (!double.IsFinite(schedule.BaseLearningRate) || schedule.BaseLearningRate < 0)
                throw Bad("schedule.base_learning_rate", $"is {schedule.BaseLearningRate}; expected a finite number >= 0");
            if (schedule.WarmupSteps < 0) throw Bad("schedule.warmup_steps", $"is {schedule.WarmupSteps}; expected >= 0");
            if (schedule.TotalSteps < 0) throw Bad("schedule.total_steps", $"is {schedule.TotalSteps}; expected >= 0");
        }
        ValidateTensors(meta.Parameters, "parameters", metaPath);
        ValidateTensors(meta.OptimizerStates, "optimizer_states", metaPath);
        if (meta.UserProperties is null) throw Bad("user_properties", "is null; expected an object of strings");
        foreach (var kv in meta.UserProperties)
            if (kv.Value is null) throw Bad($"user_properties.{kv.Key}", "is null; expected a string");
    }

    private static void ValidateTensors(IReadOnlyList<CheckpointTensor>? list, string field, string metaPath)
    {
        if (list is null)
            throw new CheckpointFormatException($"{metaPath}: field '{field}' is null; expected an array of {{name, element_type, shape}}.");
        for (var i = 0; i < list.Count; i++)
        {
            var t = list[i];
            if (t is null)
                throw new CheckpointFormatException($"{metaPath}: {field}[{i}] is null; expected {{name, element_type, shape}}.");
            if (string.IsNullOrEmpty(t.Name))
                throw new CheckpointFormatException($"{metaPath}: {field}[{i}].name is missing or empty; expected the tensor name.");
            if (t.ElementType is null)
                throw new CheckpointFormatException($"{metaPath}: {field}[{i}] ('{t.Name}') has no element_type; expected e.g. \"float\".");
            if (t.Shape is null)
                throw new CheckpointFormatException($"{metaPath}: {field}[{i}] ('{t.Name}') has no shape; expected an array of dims >= 0.");
            foreach (var d in t.Shape)
                if (d < 0)
                    throw new CheckpointFormatException($"{metaPath}: {field}[{i}] ('{t.Name}') has shape [{string.Join(",", t.Shape)}]; dims must be >= 0.");
        }
    }

    private static string Shorten(string s) => s.Length <= 80 ? s : s[..80] + "…";

    private static string Sha256(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }
}
