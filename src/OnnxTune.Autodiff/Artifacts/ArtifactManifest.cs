using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxTune.Autodiff.Lora;
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

    /// <summary>
    /// LoRA adapters (null: none): the adapted weights, their <c>lora_A</c>/<c>lora_B</c> tensors (trainable
    /// parameters) and the branches in the graphs, so export can fold them into the weights or split them off.
    /// </summary>
    public LoraManifest? Lora { get; init; }

    /// <summary>JSON options used for the manifest and checkpoint metadata.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    /// <summary>Reads <c>manifest.json</c> from an artifacts folder.</summary>
    /// <exception cref="ArtifactManifestException">The folder or manifest is missing, unreadable or malformed (a
    /// null or missing field, a wrong type, a negative dim); the message names the file and the field.</exception>
    public static ArtifactManifest Load(string artifactsDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(artifactsDirectory);
        var path = Path.Combine(artifactsDirectory, ArtifactFiles.ManifestFileName);
        if (!File.Exists(path))
            throw new ArtifactManifestException($"'{artifactsDirectory}' is not an OnnxTune artifacts folder: {ArtifactFiles.ManifestFileName} is missing.");
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException)
        {
            throw new ArtifactManifestException($"Cannot read {path}: {e.Message}", e);
        }
        ArtifactManifest m;
        try
        {
            m = JsonSerializer.Deserialize<ArtifactManifest>(text, JsonOptions)
                ?? throw new ArtifactManifestException($"{path} holds JSON null; expected a manifest object.");
        }
        catch (JsonException e)
        {
            throw new ArtifactManifestException($"{path} is not valid manifest JSON: {e.Message}", e);
        }
        if (m.FormatVersion != 1)
            throw new ArtifactManifestException($"{path}: format_version {m.FormatVersion} is not supported (expected 1).");
        m.Validate(path);
        return m;
    }

    /// <summary>Rejects what the JSON serializer lets through: null or missing fields, empty names, negative dims.</summary>
    private void Validate(string path)
    {
        ArtifactManifestException Bad(string field, string expected) => new($"{path}: field '{field}' {expected}.");
        if (Files is null) throw Bad("files", "is null; expected an object with the graph file names");
        CheckFileName(path, "files.training_model", Files.TrainingModel);
        CheckFileName(path, "files.eval_model", Files.EvalModel);
        CheckFileName(path, "files.optimizer_model", Files.OptimizerModel);
        CheckFileName(path, "files.inference_model", Files.InferenceModel);
        CheckFileName(path, "files.checkpoint", Files.Checkpoint);
        CheckSpecs(path, "inputs", Inputs);
        CheckSpecs(path, "outputs", Outputs);
        CheckSpecs(path, "trainable_parameters", TrainableParameters);
        CheckSpecs(path, "frozen_parameters", FrozenParameters);
        if (Loss is null) throw Bad("loss", "is null; expected an object (kind, output_name, label_name, ...)");
        if (Loss.OutputName is null) throw Bad("loss.output_name", "is null; expected the name of the model output the loss reads");
        if (string.IsNullOrEmpty(Loss.LossOutputName)) throw Bad("loss.loss_output_name", "is missing or empty; expected the scalar loss output name (\"loss\")");
        if (Loss.Kind != LossKind.None && string.IsNullOrEmpty(Loss.LabelName))
            throw Bad("loss.label_name", $"is missing or empty; loss '{Loss.Kind}' needs the label input name");
        if (!(Loss.LabelSmoothing is >= 0 and <= 1)) throw Bad("loss.label_smoothing", $"is {Loss.LabelSmoothing}; expected a number in [0, 1]");
        if (Optimizer is null) throw Bad("optimizer", "is null; expected an object (kind, learning_rate, ...)");
        if (!double.IsFinite(Optimizer.LearningRate)) throw Bad("optimizer.learning_rate", "is not finite");
        if (Opset < 0) throw Bad("opset", $"is {Opset}; expected an opset version >= 0");
        if (SourceModelSha256 is null) throw Bad("source_model_sha256", "is null; expected a hex string (may be empty)");
        if (Properties is null) throw Bad("properties", "is null; expected an object of strings");
        foreach (var kv in Properties)
            if (kv.Value is null) throw Bad($"properties.{kv.Key}", "is null; expected a string");
        if (Lora is not null)
        {
            if (Lora.Rank < 1) throw Bad("lora.rank", $"is {Lora.Rank}; expected 1 or more");
            if (!double.IsFinite(Lora.Scale)) throw Bad("lora.scale", "is not finite");
            if (Lora.Weights is null) throw Bad("lora.weights", "is null; expected an array of adapted weights");
            var trainable = TrainableParameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
            for (var i = 0; i < Lora.Weights.Count; i++)
            {
                var w = Lora.Weights[i];
                if (w is null || string.IsNullOrEmpty(w.Weight) || string.IsNullOrEmpty(w.A) || string.IsNullOrEmpty(w.B))
                    throw Bad($"lora.weights[{i}]", "lacks weight, a or b; expected tensor names");
                if (!trainable.Contains(w.A) || !trainable.Contains(w.B))
                    throw Bad($"lora.weights[{i}]", $"names '{w.A}'/'{w.B}', which are not trainable parameters");
                if (w.In < 1 || w.Out < 1 || !double.IsFinite(w.MergeFactor))
                    throw Bad($"lora.weights[{i}]", "has a non-positive in/out or a non-finite merge_factor");
                if (w.Branches is null || w.Branches.Any(b => b is null || string.IsNullOrEmpty(b.Output) || string.IsNullOrEmpty(b.BaseOutput) || b.Nodes is null))
                    throw Bad($"lora.weights[{i}].branches", "is null or has an entry without output, base_output or nodes");
            }
        }
    }

    private static void CheckFileName(string path, string field, string? value)
    {
        if (string.IsNullOrEmpty(value))
            throw new ArtifactManifestException($"{path}: field '{field}' is missing or empty; expected a file name inside the artifacts folder.");
    }

    private static void CheckSpecs(string path, string field, IReadOnlyList<TensorSpec>? specs)
    {
        if (specs is null)
            throw new ArtifactManifestException($"{path}: field '{field}' is null; expected an array of {{name, element_type, shape}}.");
        for (var i = 0; i < specs.Count; i++)
        {
            var s = specs[i];
            if (s is null)
                throw new ArtifactManifestException($"{path}: {field}[{i}] is null; expected {{name, element_type, shape}}.");
            if (string.IsNullOrEmpty(s.Name))
                throw new ArtifactManifestException($"{path}: {field}[{i}].name is missing or empty; expected the tensor name.");
            if (string.IsNullOrEmpty(s.ElementType))
                throw new ArtifactManifestException($"{path}: {field}[{i}] ('{s.Name}') has no element_type; expected e.g. \"float\".");
            if (s.Shape is null)
                throw new ArtifactManifestException($"{path}: {field}[{i}] ('{s.Name}') has no shape; expected an array of dims (numbers >= 0 as strings, or symbols such as \"batch\").");
            for (var d = 0; d < s.Shape.Count; d++)
            {
                var dim = s.Shape[d];
                if (string.IsNullOrEmpty(dim))
                    throw new ArtifactManifestException($"{path}: {field}[{i}] ('{s.Name}') dim {d} is null or empty; expected a number >= 0 or a symbol.");
                if (dim[0] is '-' or '+' && long.TryParse(dim, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var v) && v < 0)
                    throw new ArtifactManifestException($"{path}: {field}[{i}] ('{s.Name}') dim {d} is {v}; dims must be >= 0 (or a symbol such as \"batch\").");
            }
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

    /// <summary>
    /// Cross-entropy: PyTorch's <c>label_smoothing</c> ε in [0, 1] (default 0). Each target's loss is
    /// <c>(1 − ε)·(−log p_y) + (ε/C)·Σ_c (−log p_c)</c>, averaged like the unsmoothed loss.
    /// </summary>
    public double LabelSmoothing { get; init; }

    /// <summary>Name of the scalar loss output in the training and eval graphs.</summary>
    public string LossOutputName { get; init; } = "loss";

    /// <summary>
    /// Cross-entropy: name of an optional per-example weight input (float, the labels' shape). The loss is then the
    /// weighted mean <c>Σ wᵢ·lᵢ / Σ wᵢ</c> over non-ignored targets (PyTorch: <c>(F.cross_entropy(x, y, reduction='none') * w).sum() / w.sum()</c>);
    /// a batch without weights trains with all weights 1, which is the plain mean.
    /// </summary>
    public string? SampleWeightName { get; init; }

    /// <summary>
    /// Cross-entropy on <c>[N, C]</c> scores: name of an optional input of teacher scores <c>[N, C]</c> for knowledge
    /// distillation (with <see cref="DistillationWeightName"/>). The loss then adds
    /// <c>(1/N) Σᵢ aᵢ · T² · KL(softmax(tᵢ/T) ‖ softmax(sᵢ/T))</c> (Hinton et al.; PyTorch:
    /// <c>(a * F.kl_div(F.log_softmax(s/T, -1), F.softmax(t/T, -1), reduction='none').sum(-1)).mean() * T * T</c>).
    /// A batch without teacher scores adds nothing.
    /// </summary>
    public string? DistillationTargetName { get; init; }

    /// <summary>Name of the per-example distillation factor input <c>aᵢ</c> <c>[N]</c> (0: no distillation for that example).</summary>
    public string? DistillationWeightName { get; init; }

    /// <summary>Distillation temperature <c>T</c>.</summary>
    public double DistillationTemperature { get; init; } = 2.0;
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

/// <summary>An artifacts folder's <c>manifest.json</c> is missing, unreadable or malformed; the message names the file and the field.</summary>
public sealed class ArtifactManifestException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public ArtifactManifestException(string message, Exception? inner = null) : base(message, inner) { }
}
