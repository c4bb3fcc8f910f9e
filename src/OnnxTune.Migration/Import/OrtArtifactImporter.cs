using System.Globalization;
using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Migration.Checkpoints;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Migration.Import;

/// <summary>Where the parts of an ORT training folder are (file names relative to the folder, or absolute).</summary>
public sealed record OrtImportOptions
{
    /// <summary>The eval model (forward + loss, parameters as inputs).</summary>
    public string EvalModel { get; init; } = "eval_model.onnx";

    /// <summary>The optimizer model (one com.microsoft AdamWOptimizer or SGDOptimizerV2 node).</summary>
    public string OptimizerModel { get; init; } = "optimizer_model.onnx";

    /// <summary>The checkpoint: the flatbuffer file or the directory of .pbseq files.</summary>
    public string Checkpoint { get; init; } = "checkpoint";

    /// <summary>Learning rate when the checkpoint has no optimizer state yet (ORT's default, 1e-3).</summary>
    public double DefaultLearningRate { get; init; } = 1e-3;
}

/// <summary>What an import produced.</summary>
/// <param name="Manifest">The OnnxTune artifacts' manifest.</param>
/// <param name="CheckpointFormat">The ORT checkpoint format that was read.</param>
/// <param name="Step">Optimizer steps carried over.</param>
/// <param name="LearningRate">Learning rate carried over.</param>
/// <param name="Loss">How the eval model's loss was mapped.</param>
/// <param name="Optimizer">How the optimizer was mapped.</param>
/// <param name="DataInputs">The inputs an ORT app fed its sessions, in order (data, then labels).</param>
/// <param name="Properties">ORT user properties carried over.</param>
public sealed record OrtImportResult(ArtifactManifest Manifest, OrtCheckpointFormat CheckpointFormat, long Step, double LearningRate,
    string Loss, string Optimizer, IReadOnlyList<string> DataInputs, IReadOnlyDictionary<string, object> Properties);

/// <summary>
/// Turns a folder written by onnxruntime-training (<c>generate_artifacts</c>, then its training API's checkpoints) into
/// OnnxTune artifacts plus a checkpoint with the same parameter values, optimizer moments (<c>momentum0</c>/<c>momentum1</c>
/// → <c>.exp_avg</c>/<c>.exp_avg_sq</c>), step, learning rate and user properties; <c>train</c> then continues.
/// The training graph is re-derived by OnnxTune from the forward model and the loss found in the eval model.
/// </summary>
public static class OrtArtifactImporter
{
    /// <summary>User property of imported checkpoints: JSON object of ORT property name → <c>int</c>, <c>float</c> or <c>string</c>.</summary>
    public const string PropertyTypesProperty = "onnxtune.ort.property_types";

    /// <summary>Manifest property: the ORT folder the artifacts came from.</summary>
    public const string SourceProperty = "onnxtune.ort.source";

    /// <summary>Manifest property: the inputs an ORT app fed, comma-separated, in order.</summary>
    public const string DataInputsProperty = "onnxtune.ort.data_inputs";

    /// <summary>Imports <paramref name="ortDirectory"/> into <paramref name="outDirectory"/>.</summary>
    /// <exception cref="OrtImportException">Anything ORT wrote that has no exact OnnxTune equivalent (named in the message).</exception>
    public static OrtImportResult Import(string ortDirectory, string outDirectory, OrtImportOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(ortDirectory);
        ArgumentException.ThrowIfNullOrEmpty(outDirectory);
        options ??= new OrtImportOptions();
        var evalPath = Resolve(ortDirectory, options.EvalModel, "eval model");
        var optimizerPath = Resolve(ortDirectory, options.OptimizerModel, "optimizer model");
        var checkpointPath = Path.Combine(ortDirectory, options.Checkpoint);
        var checkpoint = OrtCheckpointReader.Read(checkpointPath);
        var result = Convert(OnnxModelReader.Load(evalPath), evalPath, OnnxModelReader.Load(optimizerPath), optimizerPath, checkpoint, options);
        return Write(result, ortDirectory, outDirectory);
    }

    internal sealed record Converted(TrainingArtifacts Artifacts, OrtCheckpoint Checkpoint, OrtEvalModel Eval, OrtOptimizerSettings Optimizer,
        OrtOptimizerGroup? Group, double LearningRate);

    internal static Converted Convert(global::Onnx.ModelProto eval, string evalPath, global::Onnx.ModelProto optimizerModel, string optimizerPath, OrtCheckpoint checkpoint, OrtImportOptions options)
    {
        if (checkpoint.OptimizerGroups.Count > 1)
            throw new OrtImportException(OrtImportErrorKind.UnmappableOptimizer, checkpoint.OptimizerGroups[1].Name,
                $"The checkpoint has {checkpoint.OptimizerGroups.Count} optimizer groups ({string.Join(", ", checkpoint.OptimizerGroups.Select(g => g.Name))}); ORT's training API writes one (group0), and the importer maps one.");
        var group = checkpoint.OptimizerGroups.Count == 0 ? null : checkpoint.OptimizerGroups[0];
        var lr = group is null ? options.DefaultLearningRate : group.InitialLearningRate;
        var forward = OrtEvalModel.FromEvalModel(eval, checkpoint, Path.GetFileName(evalPath));
        var optimizer = OrtOptimizerSettings.Read(optimizerModel, Path.GetFileName(optimizerPath), lr);

        var trainableNames = checkpoint.Trainable.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var ordered = eval.Graph.Input.Select(i => i.Name).Where(trainableNames.Contains).ToList();
        ordered.AddRange(checkpoint.Trainable.Select(t => t.Name).Where(n => !ordered.Contains(n)));
        var artifacts = ArtifactBuilder.Build(forward.Forward, new ArtifactOptions
        {
            Selection = new ParameterSelection { TrainableNames = ordered },
            Loss = forward.Loss,
            Optimizer = optimizer.Spec,
            Properties = new Dictionary<string, string> { [DataInputsProperty] = string.Join(",", forward.DataInputs) },
        });
        if (optimizer.HuggingFaceAdamW)
            artifacts = artifacts with { Optimizer = HuggingFaceAdamWGraph.Build(artifacts.Manifest.TrainableParameters, optimizer.Spec, optimizer.CorrectBias, artifacts.Manifest.Opset) };
        CheckOptimizerState(group, artifacts.Manifest);
        return new Converted(artifacts, checkpoint, forward, optimizer, group, lr);
    }

    private static void CheckOptimizerState(OrtOptimizerGroup? group, ArtifactManifest manifest)
    {
        if (group is null) return;
        var trainable = manifest.TrainableParameters.ToDictionary(p => p.Name, StringComparer.Ordinal);
        foreach (var (param, moments) in group.States)
        {
            if (!trainable.TryGetValue(param, out var spec))
                throw new OrtImportException(OrtImportErrorKind.ParameterMismatch, param, $"The checkpoint's optimizer group '{group.Name}' has state for '{param}', which is not a trainable parameter.");
            if (manifest.Optimizer.Kind == OptimizerKind.Sgd && moments.Count > 0)
                throw new OrtImportException(OrtImportErrorKind.UnmappableOptimizer, param, $"The checkpoint has optimizer state {string.Join(", ", moments.Keys)} for '{param}', but the optimizer model is plain SGD (no state).");
            foreach (var (name, t) in moments)
            {
                if (MomentSuffix(name) is null)
                    throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, $"{param}:{name}", $"Optimizer state '{name}' of '{param}' is not one of ORT's AdamW moments (momentum0, momentum1).");
                if (!t.Dims.SequenceEqual(spec.FixedDims))
                    throw new OrtImportException(OrtImportErrorKind.ParameterMismatch, $"{param}:{name}", $"Optimizer state '{name}' of '{param}' is [{string.Join(",", t.Dims)}], the parameter [{string.Join(",", spec.FixedDims)}].");
            }
        }
        if (manifest.Optimizer.Kind == OptimizerKind.AdamW)
            foreach (var p in manifest.TrainableParameters)
                if (!group.States.TryGetValue(p.Name, out var m) || m.Count != 2)
                    throw new OrtImportException(OrtImportErrorKind.ParameterMismatch, p.Name, $"The checkpoint's optimizer group '{group.Name}' lacks momentum0/momentum1 for trainable parameter '{p.Name}'.");
    }

    internal static string? MomentSuffix(string ortName) => ortName switch
    {
        "momentum0" or "moment_0" => ".exp_avg",
        "momentum1" or "moment_1" => ".exp_avg_sq",
        _ => null,
    };

    internal static OrtImportResult Write(Converted c, string ortDirectory, string outDirectory)
    {
        var artifacts = c.Artifacts with
        {
            Manifest = c.Artifacts.Manifest with
            {
                Properties = new Dictionary<string, string>(c.Artifacts.Manifest.Properties) { [SourceProperty] = Path.GetFullPath(ortDirectory) },
            },
        };
        ArtifactGenerator.Save(artifacts, outDirectory);
        var checkpointDir = Path.Combine(outDirectory, artifacts.Manifest.Files.Checkpoint);
        WriteCheckpoint(checkpointDir, c, artifacts.Manifest, Path.GetFullPath(outDirectory));
        return new OrtImportResult(artifacts.Manifest, c.Checkpoint.Format, c.Group?.Step ?? 0, c.LearningRate, c.Eval.LossDescription,
            c.Optimizer.Description, c.Eval.DataInputs, c.Checkpoint.Properties);
    }

    /// <summary>Rewrites the initial checkpoint <see cref="ArtifactGenerator"/> wrote with the ORT state.</summary>
    internal static void WriteCheckpoint(string checkpointDir, Converted c, ArtifactManifest manifest, string artifactsDirectory)
    {
        var (meta, tensors) = CheckpointStore.Load(checkpointDir);
        var values = c.Checkpoint.Trainable.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var replaced = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var p in manifest.TrainableParameters)
        {
            replaced[p.Name] = values[p.Name].Data;
            var moments = c.Group?.States.GetValueOrDefault(p.Name);
            if (moments is null) continue;
            foreach (var (name, t) in moments) replaced[p.Name + MomentSuffix(name)] = t.Data;
        }
        var output = tensors.Tensors.Select(t => replaced.TryGetValue(t.Name, out var data)
            ? new SafeTensor(t.Name, t.DType, t.Shape, data) : t).ToList();
        var properties = new Dictionary<string, string>(meta.UserProperties, StringComparer.Ordinal)
        {
            [ArtifactGenerator.ArtifactsProperty] = artifactsDirectory,
        };
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in c.Checkpoint.Properties)
        {
            (properties[name], types[name]) = value switch
            {
                long l => (l.ToString(CultureInfo.InvariantCulture), "int"),
                float f => (f.ToString("R", CultureInfo.InvariantCulture), "float"),
                _ => ((string)value, "string"),
            };
        }
        properties[PropertyTypesProperty] = JsonSerializer.Serialize(types);
        CheckpointStore.Save(checkpointDir, meta with
        {
            Step = c.Group?.Step ?? 0,
            LearningRate = c.LearningRate,
            UserProperties = properties,
        }, output);
    }

    private static string Resolve(string directory, string file, string what)
    {
        var path = Path.Combine(directory, file);
        if (!File.Exists(path))
            throw new OrtImportException(OrtImportErrorKind.MissingFile, path, $"The {what} '{path}' does not exist.");
        if (path.EndsWith(".ort", StringComparison.OrdinalIgnoreCase))
            throw new OrtImportException(OrtImportErrorKind.UnsupportedModel, path, $"'{path}' is an ORT-format (flatbuffer) model; import the .onnx {what} that generate_artifacts wrote next to it.");
        return path;
    }
}
