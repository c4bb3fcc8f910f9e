using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Autodiff.Artifacts;

/// <summary>
/// Describes one artifacts folder (<c>manifest.json</c>): the graphs, their inputs and outputs, which parameters
/// train, the loss and the optimizer. Written by <c>ArtifactBuilder</c>, read by the training runtime.
/// </summary>
public sealed record ArtifactManifest
{
    /// <summary>Manifest format version; bumped on incompatible change.</summary>
    public int FormatVersion { get; init; } = 1;

    /// <summary>File names inside the artifacts folder.</summary>
    public ArtifactFiles Files { get; init; } = new();

    /// <summary>Data inputs of the model (not parameters), in graph order.</summary>
    public IReadOnlyList<TensorSpec> Inputs { get; init; } = [];

    /// <summary>Outputs of the source inference model, in graph order.</summary>
    public IReadOnlyList<TensorSpec> Outputs { get; init; } = [];

    /// <summary>Trainable parameters (graph inputs of the training, eval and optimizer graphs).</summary>
    public IReadOnlyList<TensorSpec> TrainableParameters { get; init; } = [];

    /// <summary>Frozen parameters (left as initializers in the graphs).</summary>
    public IReadOnlyList<TensorSpec> FrozenParameters { get; init; } = [];

    /// <summary>
    /// Non-trainable state (BatchNormalization running mean/var of layers training with batch statistics): graph
    /// inputs of the training and eval graphs; the training graph outputs the updated value of each as
    /// <c>&lt;name&gt;.running.out</c>, which the runtime writes back after every train step. Carried in checkpoints
    /// and exported into the inference model.
    /// </summary>
    public IReadOnlyList<TensorSpec> NonTrainableState { get; init; } = [];

    /// <summary>Loss settings.</summary>
    public LossSpec Loss { get; init; } = new();

    /// <summary>Optimizer settings.</summary>
    public OptimizerSpec Optimizer { get; init; } = new();

    /// <summary>Default-domain opset of the generated graphs.</summary>
    public long Opset { get; init; }

    /// <summary>SHA-256 (hex) of the source model file bytes.</summary>
    public string SourceModelSha256 { get; init; } = "";

    /// <summary>Free-form extra data (task head, label map file, tokenizer settings...).</summary>
    public IReadOnlyDictionary<string, string> Properties { get; init; } = new Dictionary<string, string>();

    /// <summary>JSON options used for the manifest and checkpoint metadata.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    /// <summary>Reads <c>manifest.json</c> from an artifacts folder.</summary>
    /// <exception cref="OnnxTuneException">The folder or manifest is missing or unreadable.</exception>
    public static ArtifactManifest Load(string artifactsDirectory)
    {
        var path = Path.Combine(artifactsDirectory, ArtifactFiles.ManifestFileName);
        if (!File.Exists(path))
            throw new OnnxTuneException($"'{artifactsDirectory}' is not an OnnxTune artifacts folder: {ArtifactFiles.ManifestFileName} is missing.");
        try
        {
            var m = JsonSerializer.Deserialize<ArtifactManifest>(File.ReadAllText(path), JsonOptions)
                ?? throw new OnnxTuneException($"{path} is empty.");
            if (m.FormatVersion != 1)
                throw new OnnxTuneException($"{path}: format_version {m.FormatVersion} is not supported (expected 1).");
            return m;
        }
        catch (JsonException e)
        {
            throw new OnnxTuneException($"{path} is not valid manifest JSON: {e.Message}", e);
        }
    }

    /// <summary>Writes <c>manifest.json</c> atomically.</summary>
    public void Save(string artifactsDirectory) =>
        AtomicFile.WriteAllText(Path.Combine(artifactsDirectory, ArtifactFiles.ManifestFileName), JsonSerializer.Serialize(this, JsonOptions));
}

/// <summary>File names in an artifacts folder.</summary>
public sealed record ArtifactFiles
{
    /// <summary>The manifest's file name.</summary>
    public const string ManifestFileName = "manifest.json";

    /// <summary>Forward + loss + gradients (+ gradient accumulation).</summary>
    public string TrainingModel { get; init; } = "training_model.onnx";

    /// <summary>Forward + loss, returning the model outputs too.</summary>
    public string EvalModel { get; init; } = "eval_model.onnx";

    /// <summary>One optimizer update for all trainable parameters.</summary>
    public string OptimizerModel { get; init; } = "optimizer_model.onnx";

    /// <summary>The source inference model (export target: same graph, trained weights).</summary>
    public string InferenceModel { get; init; } = "inference_model.onnx";

    /// <summary>Initial checkpoint folder.</summary>
    public string Checkpoint { get; init; } = "checkpoint";
}

/// <summary>Name, element type and shape of a tensor. Dims: a number, or a symbol such as <c>batch</c>.</summary>
public sealed record TensorSpec(string Name, string ElementType, IReadOnlyList<string> Shape)
{
    /// <summary>Fixed dims as longs (-1 for symbolic).</summary>
    [JsonIgnore]
    public long[] FixedDims => Shape.Select(d => long.TryParse(d, out var v) ? v : -1).ToArray();
}

/// <summary>Loss kinds (ONNX Runtime training's names where they exist).</summary>
public enum LossKind
{
    /// <summary>Softmax cross-entropy over class logits, mean reduction, optional ignore index.</summary>
    CrossEntropy,
    /// <summary>Mean squared error, mean reduction.</summary>
    Mse,
    /// <summary>Binary cross-entropy on logits, mean reduction.</summary>
    BceWithLogits,
    /// <summary>Mean absolute error, mean reduction.</summary>
    L1,
    /// <summary>The model already outputs a scalar loss.</summary>
    None,
}

/// <summary>Loss settings recorded in the manifest.</summary>
public sealed record LossSpec
{
    /// <summary>Which loss.</summary>
    public LossKind Kind { get; init; } = LossKind.CrossEntropy;

    /// <summary>The model output the loss reads (or the scalar loss output for <see cref="LossKind.None"/>).</summary>
    public string OutputName { get; init; } = "";

    /// <summary>Label graph input name (absent for <see cref="LossKind.None"/>).</summary>
    public string? LabelName { get; init; } = "labels";

    /// <summary>Label element type: int64 for cross-entropy, float otherwise.</summary>
    public string? LabelElementType { get; init; }

    /// <summary>Cross-entropy: label value whose positions are ignored.</summary>
    public long? IgnoreIndex { get; init; }

    /// <summary>Name of the scalar loss output in the training and eval graphs.</summary>
    public string LossOutputName { get; init; } = "loss";
}

/// <summary>Optimizer kinds.</summary>
public enum OptimizerKind
{
    /// <summary>PyTorch torch.optim.AdamW.</summary>
    AdamW,
    /// <summary>PyTorch torch.optim.SGD (momentum, dampening, nesterov, L2 weight decay).</summary>
    Sgd,
}

/// <summary>Optimizer hyperparameters (PyTorch defaults).</summary>
public sealed record OptimizerSpec
{
    /// <summary>Which optimizer.</summary>
    public OptimizerKind Kind { get; init; } = OptimizerKind.AdamW;

    /// <summary>Initial learning rate (a graph input at run time, so schedules need no rebuild).</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>AdamW beta1.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>AdamW beta2.</summary>
    public double Beta2 { get; init; } = 0.999;

    /// <summary>AdamW epsilon.</summary>
    public double Epsilon { get; init; } = 1e-8;

    /// <summary>Weight decay: decoupled for AdamW (default 0.01), L2 on the gradient for SGD (default 0).</summary>
    public double WeightDecay { get; init; } = 0.01;

    /// <summary>SGD momentum.</summary>
    public double Momentum { get; init; }

    /// <summary>SGD dampening.</summary>
    public double Dampening { get; init; }

    /// <summary>SGD Nesterov momentum.</summary>
    public bool Nesterov { get; init; }

    /// <summary>Clip gradients to this global L2 norm before the update (null: no clipping).</summary>
    public double? MaxGradNorm { get; init; }

    /// <summary>Names of per-parameter state tensors, as suffixes: <c>&lt;param&gt;.exp_avg</c>, ...</summary>
    [JsonIgnore]
    public IReadOnlyList<string> StateSuffixes => Kind switch
    {
        OptimizerKind.AdamW => [".exp_avg", ".exp_avg_sq"],
        _ => Momentum != 0 ? [".momentum_buffer"] : [],
    };
}
