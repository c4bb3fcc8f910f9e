using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Training.Artifacts;

/// <summary>
/// Generates a complete artifacts folder in one call — training, eval and optimizer graphs, inference model,
/// manifest, and the initial checkpoint (the model's weights with zeroed optimizer state) — the .NET counterpart
/// of onnxruntime-training's <c>generate_artifacts</c>.
/// </summary>
public static class ArtifactGenerator
{
    /// <summary>User property recording which artifacts folder a checkpoint belongs to.</summary>
    public const string ArtifactsProperty = "onnxtune.artifacts";

    /// <summary>Builds the artifacts of <paramref name="model"/> into <paramref name="directory"/>.</summary>
    /// <exception cref="OnnxTuneException">The model cannot be trained as asked (opset, op without gradient rule, selection...).</exception>
    public static TrainingArtifacts Generate(ModelProto model, ArtifactOptions options, string directory, string? sourceSha256 = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var artifacts = ArtifactBuilder.Build(model, options, sourceSha256);
        Save(artifacts, directory);
        return artifacts;
    }

    /// <summary>Writes built artifacts into <paramref name="directory"/> and adds the initial checkpoint.</summary>
    public static void Save(TrainingArtifacts artifacts, string directory)
    {
        ArgumentNullException.ThrowIfNull(artifacts);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArtifactBuilder.Save(artifacts, directory);

        // A checkpoint left by an earlier generation in the same folder would be loaded instead of the new weights.
        var checkpoint = Path.Combine(directory, artifacts.Manifest.Files.Checkpoint);
        foreach (var file in new[] { CheckpointStore.MetadataFileName, CheckpointStore.TensorsFileName })
        {
            var path = Path.Combine(checkpoint, file);
            if (File.Exists(path)) File.Delete(path);
        }
        using (var session = TrainingEngine.Open(directory))
            session.SaveCheckpoint(checkpoint, new Dictionary<string, string> { [ArtifactsProperty] = Path.GetFullPath(directory) });
    }
}
