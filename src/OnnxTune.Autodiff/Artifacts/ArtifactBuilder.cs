using System.Security.Cryptography;
using Onnx;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Autodiff.Artifacts;

/// <summary>Everything that decides what <see cref="ArtifactBuilder"/> generates.</summary>
public sealed record ArtifactOptions
{
    /// <summary>Which parameters train.</summary>
    public ParameterSelection Selection { get; init; } = new();

    /// <summary>Loss settings.</summary>
    public LossSpec Loss { get; init; } = new();

    /// <summary>Optimizer settings.</summary>
    public OptimizerSpec Optimizer { get; init; } = new();

    /// <summary>Extra manifest properties (task head, label map, tokenizer...).</summary>
    public IReadOnlyDictionary<string, string> Properties { get; init; } = new Dictionary<string, string>();

    /// <summary>Gradient rules (default registry when null).</summary>
    public GradientRuleRegistry? Registry { get; init; }

    /// <summary>BatchNormalization training behaviour (default: layers with trainable scale or bias use batch statistics).</summary>
    public BatchNormTraining BatchNorm { get; init; } = new();

    /// <summary>
    /// LoRA adapters on MatMul/Gemm weights (null: none). With adapters the base model is frozen except what
    /// <see cref="Selection"/> names explicitly (<see cref="ParameterSelection.Trainable"/> globs or
    /// <see cref="ParameterSelection.TrainableNames"/>); the adapters always train.
    /// </summary>
    public LoraOptions? Lora { get; init; }
}

/// <summary>The generated graphs and manifest, before or after they are written.</summary>
/// <param name="Manifest">The manifest.</param>
/// <param name="Training">Training graph.</param>
/// <param name="Eval">Eval graph.</param>
/// <param name="Optimizer">Optimizer graph.</param>
/// <param name="Inference">The source inference model (upgraded to opset 13 when it was at opset 11 or 12).</param>
public sealed record TrainingArtifacts(ArtifactManifest Manifest, ModelProto Training, ModelProto Eval, ModelProto Optimizer, ModelProto Inference);

/// <summary>
/// The .NET counterpart of onnxruntime-training's <c>generate_artifacts</c>: from an inference model, builds the
/// training graph (forward + loss + gradients + accumulation), eval graph, optimizer graph and manifest, using only
/// standard ONNX operators and keeping every batch/sequence dimension symbolic.
/// </summary>
public static class ArtifactBuilder
{
    /// <summary>Builds all graphs in memory, with OnnxTune's AdamW/SGD optimizer graph.</summary>
    /// <param name="model">The inference model (not modified; opsets 11 and 12 are upgraded to 13 first).</param>
    /// <param name="options">Selection, loss and optimizer.</param>
    /// <param name="sourceSha256">Hash of the source file, recorded in the manifest (computed from the model bytes when null).</param>
    public static TrainingArtifacts Build(ModelProto model, ArtifactOptions options, string? sourceSha256 = null) =>
        Build(model, options, (p, spec, opset) => Optimizers.OptimizerGraphBuilder.Build(p, spec, opset), sourceSha256);

    /// <summary>Builds all graphs in memory with a custom optimizer graph.</summary>
    /// <param name="model">The inference model (not modified; opsets 11 and 12 are upgraded to 13 first).</param>
    /// <param name="options">Selection, loss and optimizer.</param>
    /// <param name="sourceSha256">Hash of the source file, recorded in the manifest (computed from the model bytes when null).</param>
    /// <param name="optimizerGraph">Builds the optimizer graph for the trainable parameters (see OnnxTune.Autodiff.Optimizers).</param>
    public static TrainingArtifacts Build(ModelProto model, ArtifactOptions options, Func<IReadOnlyList<TensorSpec>, OptimizerSpec, long, ModelProto> optimizerGraph, string? sourceSha256 = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(optimizerGraph);
        // The hash names the user's model; everything else (and the inference model served and exported) is the
        // opset-13 upgrade of an opset-11/12 model.
        sourceSha256 ??= Convert.ToHexStringLower(SHA256.HashData(OnnxModelWriter.ToBytes(model)));
        model = TrainingGraphBuilder.UpgradeOpset(model);
        var opset = TrainingGraphBuilder.CheckModel(model);
        var selection = options.Selection;
        var source = model;
        var inference = model;
        LoraManifest? lora = null;
        if (options.Lora is { } loraOptions)
        {
            var adapted = LoraGraph.Augment(model, loraOptions, training: true);
            lora = adapted.Manifest;
            source = adapted.Model;
            inference = loraOptions.Dropout > 0 ? LoraGraph.Augment(model, loraOptions, training: false).Model : adapted.Model;
            var adapterNames = lora.TensorNames.ToList();
            selection = selection with { TrainableNames = [.. selection.TrainableNames, .. adapterNames] };
            var (resolved, _) = selection.Resolve(source);
            var both = lora.Weights.Select(w => w.Weight).FirstOrDefault(resolved.Contains);
            if (both is not null)
                throw new LoraException($"'{both}' is both a LoRA target and selected as trainable; LoRA keeps the weight it adapts frozen (drop it from --trainable or from --lora).");
        }
        var graphs = TrainingGraphBuilder.Build(source, selection, options.Loss, gradientAccumulation: true, options.Registry, options.BatchNorm);
        // A training-mode export's BatchNormalization (training_mode=1) would normalise with each batch's statistics
        // in ONNX Runtime; the inference model, like PyTorch's eval mode, uses the running statistics.
        if (inference.Graph.Node.Any(n => n.OpType == "BatchNormalization" && n.Attribute.Any(a => a.Name == "training_mode")))
        {
            inference = inference.Clone();
            BatchNormTrainingRewrite.UseRunningStatistics(inference.Graph);
        }
        var eval = graphs.Eval;
        if (lora is not null && lora.Dropout > 0)
        {
            eval = eval.Clone();
            LoraGraph.SetDropoutTraining(eval, training: false);
        }
        var optimizer = optimizerGraph(graphs.Trainable, options.Optimizer, opset);

        var lossOutput = string.IsNullOrEmpty(options.Loss.OutputName) ? model.Graph.Output[0].Name : options.Loss.OutputName;
        var loss = options.Loss with
        {
            OutputName = lossOutput,
            LabelName = options.Loss.Kind == LossKind.None ? null : options.Loss.LabelName ?? "labels",
            LabelElementType = options.Loss.Kind switch
            {
                LossKind.None => null,
                LossKind.CrossEntropy => "int64",
                _ => graphs.Outputs.First(o => o.Name == lossOutput).ElementType,
            },
        };
        var manifest = new ArtifactManifest
        {
            Inputs = graphs.Inputs,
            Outputs = graphs.Outputs,
            TrainableParameters = graphs.Trainable,
            FrozenParameters = graphs.Frozen,
            NonTrainableState = graphs.State,
            Loss = loss,
            Optimizer = options.Optimizer,
            Opset = Math.Max(opset, MaxOpset(graphs.Training)),
            SourceModelSha256 = sourceSha256,
            Properties = options.Properties,
            Lora = lora,
        };
        return new TrainingArtifacts(manifest, graphs.Training, eval, optimizer, inference);
    }

    /// <summary>Writes the artifacts into <paramref name="directory"/> (each file atomically, manifest last).</summary>
    public static void Save(TrainingArtifacts artifacts, string directory)
    {
        ArgumentNullException.ThrowIfNull(artifacts);
        Directory.CreateDirectory(directory);
        var files = artifacts.Manifest.Files;
        OnnxModelWriter.Save(artifacts.Training, Path.Combine(directory, files.TrainingModel));
        OnnxModelWriter.Save(artifacts.Eval, Path.Combine(directory, files.EvalModel));
        OnnxModelWriter.Save(artifacts.Optimizer, Path.Combine(directory, files.OptimizerModel));
        OnnxModelWriter.Save(artifacts.Inference, Path.Combine(directory, files.InferenceModel));
        artifacts.Manifest.Save(directory);
    }

    /// <summary>SHA-256 (lower-case hex) of a file.</summary>
    public static string FileSha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static long MaxOpset(ModelProto m) =>
        m.OpsetImport.Where(o => string.IsNullOrEmpty(o.Domain)).Select(o => o.Version).DefaultIfEmpty(0).Max();
}
