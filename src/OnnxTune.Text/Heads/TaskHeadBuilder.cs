using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Text.Heads;

/// <summary>An encoder with a task head: one inference model, plus what training it needs.</summary>
/// <param name="Model">Encoder + head; loads in a plain ONNX Runtime <c>InferenceSession</c>. Dropout is off (inference mode).</param>
/// <param name="Options">The options it was built with.</param>
/// <param name="OutputName">The head's output (<c>logits</c> or <c>predictions</c>), the model's only output.</param>
/// <param name="HiddenSize">Width of the encoder's token states.</param>
/// <param name="HeadParameters">The new parameters (<c>head.dense.weight</c>, <c>head.dense.bias</c>).</param>
/// <param name="Loss">The matching loss: cross-entropy (ignore index -100) or MSE, on <paramref name="OutputName"/>.</param>
public sealed record TaskHeadModel(ModelProto Model, TaskHeadOptions Options, string OutputName, int HiddenSize, IReadOnlyList<string> HeadParameters, LossSpec Loss);

/// <summary>
/// Puts a task head on an encoder ONNX model (BERT-style: token states <c>[batch, sequence, hidden]</c>): sequence
/// classification (mean or first-token pooling, dropout, linear), token classification (dropout, per-token linear)
/// or regression (pooling, dropout, linear). The encoder's other outputs and whatever only they used (e.g. the
/// pooler) are removed. New weights are initialised like PyTorch's <c>nn.Linear</c>: weight <c>[out, in]</c> and bias
/// drawn from U(-1/sqrt(in), 1/sqrt(in)).
/// </summary>
public static class TaskHeadBuilder
{
    /// <summary>Prefix of every head parameter and node.</summary>
    public const string Prefix = "head.";

    /// <summary>Weight of the head's linear layer, <c>[outputs, hidden]</c>.</summary>
    public const string WeightName = "head.dense.weight";

    /// <summary>Bias of the head's linear layer, <c>[outputs]</c>.</summary>
    public const string BiasName = "head.dense.bias";

    /// <summary>
    /// Output of the Constant node feeding the head Dropout's <c>training_mode</c>: false in the inference and eval
    /// models, true in the training graph (see <see cref="SetDropoutTraining"/>).
    /// </summary>
    public const string DropoutTrainingModeName = "head.dropout.training_mode";

    /// <summary>The per-example loss-weight input of sequence-classification training graphs (see <c>LossSpec.SampleWeightName</c>).</summary>
    public const string SampleWeightsName = "sample_weights";

    /// <summary>The teacher-scores input of sequence-classification training graphs (see <c>LossSpec.DistillationTargetName</c>).</summary>
    public const string TeacherLogitsName = "teacher_logits";

    /// <summary>The per-example distillation factor input (see <c>LossSpec.DistillationWeightName</c>).</summary>
    public const string DistillationWeightsName = "distillation_weights";

    /// <summary>PyTorch's <c>CrossEntropyLoss</c> default <c>ignore_index</c> (padding and sub-word positions in token classification).</summary>
    public const long IgnoreIndex = -100;

    /// <summary>Builds encoder + head. The encoder model is not modified.</summary>
    /// <exception cref="TaskHeadException">The encoder has no usable token-state output, the hidden size is unknown, mean pooling lacks the mask input, or an option is out of range.</exception>
    public static TaskHeadModel Build(ModelProto encoder, TaskHeadOptions options)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Outputs < 1)
            throw new TaskHeadException($"A task head needs at least one output (got {options.Outputs} classes/values).");
        if (!(options.Dropout >= 0 && options.Dropout < 1))
            throw new TaskHeadException($"Dropout must be in [0, 1) (got {options.Dropout}).");
        if (encoder.Graph is null)
            throw new TaskHeadException("The encoder model has no graph.");
        var opset = encoder.OpsetImport.FirstOrDefault(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx")?.Version ?? 0;
        if (opset < 11)
            throw new TaskHeadException($"The encoder uses opset {opset}; task heads are written in opset 13 forms (Unsqueeze/ReduceSum axes as inputs) and only opsets 11 and 12 are upgraded to 13 automatically. Convert the model to opset 13 or newer first.");
        // Opsets 11 and 12 are upgraded to 13 (same outputs) before the head is added.
        if (opset < TrainingGraphBuilder.MinimumOpset) encoder = TrainingGraphBuilder.UpgradeOpset(encoder);

        var model = encoder.Clone();
        var g = model.Graph;
        var states = options.EncoderOutput is { } wanted
            ? g.Output.FirstOrDefault(o => o.Name == wanted)
                ?? throw new TaskHeadException($"The encoder has no output '{wanted}' (outputs: {string.Join(", ", g.Output.Select(o => o.Name))}).")
            : g.Output.FirstOrDefault(o => ValueInfos.Dims(o) is { Length: 3 })
                ?? throw new TaskHeadException($"The encoder has no rank-3 output of token states [batch, sequence, hidden] (outputs: {string.Join(", ", g.Output.Select(o => $"{o.Name} rank {ValueInfos.Dims(o)?.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?"}"))}); name one with EncoderOutput.");
        var dims = states.Type?.TensorType?.Shape?.Dim.ToArray();
        if (dims is not { Length: 3 })
            throw new TaskHeadException($"Encoder output '{states.Name}' must have rank 3 [batch, sequence, hidden].");
        var elem = ValueInfos.ElemType(states);
        if (elem is not (DataType.Float or DataType.Double))
            throw new TaskHeadException($"Encoder output '{states.Name}' holds {elem}; a float tensor was expected.");
        var hidden = options.HiddenSize
            ?? (dims[2].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? (int?)dims[2].DimValue : null)
            ?? HiddenFromFinalBias(g, states.Name)
            ?? throw new TaskHeadException($"The hidden size (last dim of '{states.Name}') is neither declared in the model nor readable from a 1-D parameter added at its end (e.g. a LayerNorm bias); set HiddenSize.");
        if (hidden < 1) throw new TaskHeadException($"Hidden size must be positive (got {hidden}).");

        var editor = new GraphEditor(g);
        foreach (var name in new[] { WeightName, BiasName, DropoutTrainingModeName })
            if (editor.IsUsed(name))
                throw new TaskHeadException($"The encoder already uses the name '{name}'; it seems to have a head already.");

        var sequenceLevel = options.Kind != TaskHeadKind.TokenClassification;
        var x = states.Name;
        if (sequenceLevel)
            x = options.Pooling == HeadPooling.Mean ? MeanPool(editor, x, elem, options.AttentionMaskInput) : FirstToken(editor, x);

        if (options.Dropout > 0)
        {
            var ratio = Constant(editor, "head.dropout.ratio", elem == DataType.Double ? TensorProtos.Double("ratio", [options.Dropout]) : TensorProtos.Float("ratio", [options.Dropout]));
            var mode = Constant(editor, DropoutTrainingModeName, TensorProtos.Bool("training_mode", [false]), exactName: true);
            x = editor.Add("Dropout", [x, ratio, mode], "head.dropout.output");
        }

        // nn.Linear's reset_parameters: kaiming_uniform(a=sqrt(5)) on the weight is U(±1/sqrt(fan_in)), and so is the bias.
        var rng = new Random(options.Seed);
        var bound = 1.0 / Math.Sqrt(hidden);
        var w = new float[options.Outputs * hidden];
        for (var i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
        var b = new float[options.Outputs];
        for (var i = 0; i < b.Length; i++) b[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
        var wT = elem == DataType.Double ? TensorProtos.Double(WeightName, Array.ConvertAll(w, v => (double)v), options.Outputs, hidden) : TensorProtos.Float(WeightName, w, options.Outputs, hidden);
        var bT = elem == DataType.Double ? TensorProtos.Double(BiasName, Array.ConvertAll(b, v => (double)v), options.Outputs) : TensorProtos.Float(BiasName, b, options.Outputs);
        editor.AddInitializer(wT, makeUnique: false);
        editor.AddInitializer(bT, makeUnique: false);

        var outputName = options.OutputName ?? (options.Kind == TaskHeadKind.Regression ? "predictions" : "logits");
        if (editor.IsUsed(outputName))
            throw new TaskHeadException($"The head output name '{outputName}' is already used in the encoder; pick another OutputName.");
        editor.Reserve(outputName);
        object?[] outDims;
        if (sequenceLevel)
        {
            editor.AddNode("Gemm", [x, WeightName, BiasName], [outputName], Attr.Int("transB", 1));
            outDims = [DimObject(dims[0]), (long)options.Outputs];
        }
        else
        {
            var wt = editor.Add("Transpose", [WeightName], "head.dense.weight_t", Attr.Ints("perm", 1, 0));
            var mm = editor.Add("MatMul", [x, wt], "head.dense.matmul");
            editor.AddNode("Add", [mm, BiasName], [outputName]);
            outDims = [DimObject(dims[0]), DimObject(dims[1]), (long)options.Outputs];
        }
        g.Output.Clear();
        g.Output.Add(ValueInfos.Tensor(outputName, elem, outDims));
        Prune(g);

        var loss = new LossSpec
        {
            Kind = options.Kind == TaskHeadKind.Regression ? LossKind.Mse : LossKind.CrossEntropy,
            OutputName = outputName,
            LabelName = "labels",
            IgnoreIndex = options.Kind == TaskHeadKind.Regression ? null : IgnoreIndex,
            // One weight per text: feedback weights scale each example's share of the loss.
            SampleWeightName = options.Kind == TaskHeadKind.SequenceClassification ? SampleWeightsName : null,
            // Teacher scores (the serving model's, on replayed examples) keep what the model knew while it learns.
            DistillationTargetName = options.Kind == TaskHeadKind.SequenceClassification ? TeacherLogitsName : null,
            DistillationWeightName = options.Kind == TaskHeadKind.SequenceClassification ? DistillationWeightsName : null,
        };
        return new TaskHeadModel(model, options, outputName, hidden, [WeightName, BiasName], loss);
    }

    /// <summary>
    /// Sets the value of the head Dropout's <c>training_mode</c> Constant in <paramref name="model"/> (in place);
    /// returns how many such nodes were changed (0 when the head has no dropout).
    /// </summary>
    public static int SetDropoutTraining(ModelProto model, bool training)
    {
        ArgumentNullException.ThrowIfNull(model);
        var changed = 0;
        foreach (var n in model.Graph.Node)
        {
            if (n.OpType != "Constant" || n.Output.Count != 1 || n.Output[0] != DropoutTrainingModeName) continue;
            var value = n.Find("value") ?? throw new TaskHeadException($"Constant '{DropoutTrainingModeName}' has no 'value' attribute.");
            value.T = TensorProtos.Bool(value.T?.Name ?? "training_mode", [training]);
            changed++;
        }
        return changed;
    }

    // Exports often leave the hidden dim symbolic; BERT-style outputs end with a LayerNorm whose 1-D bias or weight
    // (added or multiplied last) has exactly the hidden size.
    private static int? HiddenFromFinalBias(GraphProto g, string output)
    {
        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in g.Node) foreach (var o in n.Output) producers[o] = n;
        var inits = g.Initializer.Where(t => t.Dims.Count == 1 && TensorProtos.IsFloating((DataType)t.DataType)).ToDictionary(t => t.Name, StringComparer.Ordinal);
        var tensor = output;
        for (var depth = 0; depth < 3 && producers.TryGetValue(tensor, out var node); depth++)
        {
            if (node.OpType is not ("Add" or "Mul" or "Identity" or "LayerNormalization")) return null;
            var param = node.Input.FirstOrDefault(inits.ContainsKey);
            if (param is not null) return (int)inits[param].Dims[0];
            tensor = node.Input[0];
        }
        return null;
    }

    private static string MeanPool(GraphEditor editor, string states, DataType elem, string maskInput)
    {
        var mask = editor.Graph.Input.FirstOrDefault(i => i.Name == maskInput)
            ?? throw new TaskHeadException($"Mean pooling needs the attention mask input '{maskInput}', which the encoder does not have (inputs: {string.Join(", ", editor.Graph.Input.Select(i => i.Name))}); use first-token pooling or name the mask input.");
        var maskF = editor.Add("Cast", [mask.Name], "head.pool.mask_float", Attr.Int("to", (long)elem));
        var axesLast = Constant(editor, "head.pool.axes_last", TensorProtos.Int64("axes", [-1], 1));
        var mask3 = editor.Add("Unsqueeze", [maskF, axesLast], "head.pool.mask");
        var masked = editor.Add("Mul", [states, mask3], "head.pool.masked");
        var axesSeq = Constant(editor, "head.pool.axes_sequence", TensorProtos.Int64("axes", [1], 1));
        var sum = editor.Add("ReduceSum", [masked, axesSeq], "head.pool.sum", Attr.Int("keepdims", 0));
        var count = editor.Add("ReduceSum", [mask3, axesSeq], "head.pool.count", Attr.Int("keepdims", 0));
        var floor = Constant(editor, "head.pool.min_count", elem == DataType.Double ? TensorProtos.Double("min", [1e-9]) : TensorProtos.Float("min", [1e-9f]));
        var clamped = editor.Add("Max", [count, floor], "head.pool.count_clamped");
        return editor.Add("Div", [sum, clamped], "head.pool.output");
    }

    private static string FirstToken(GraphEditor editor, string states)
    {
        var zero = Constant(editor, "head.pool.first_index", TensorProtos.Int64("index", [0]));
        return editor.Add("Gather", [states, zero], "head.pool.output", Attr.Int("axis", 1));
    }

    // Constants are nodes, not initializers: float initializers count as parameters.
    private static string Constant(GraphEditor editor, string name, TensorProto value, bool exactName = false)
    {
        var output = exactName ? editor.Reserve(name) : editor.UniqueName(name);
        editor.AddNode("Constant", [], [output], Attr.Tensor("value", value));
        return output;
    }

    /// <summary>Drops nodes no output depends on, then initializers and value infos nothing uses.</summary>
    internal static void Prune(GraphProto g)
    {
        var formerInitializers = g.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var needed = new HashSet<string>(g.Output.Select(o => o.Name), StringComparer.Ordinal);
        var keep = new bool[g.Node.Count];
        for (var i = g.Node.Count - 1; i >= 0; i--)
        {
            var n = g.Node[i];
            if (!n.Output.Any(needed.Contains)) continue;
            keep[i] = true;
            foreach (var input in n.Input) needed.Add(input);
            foreach (var a in n.Attribute)
            {
                if (a.G is not null) foreach (var inner in a.G.Node.SelectMany(x => x.Input)) needed.Add(inner);
                foreach (var sub in a.Graphs) foreach (var inner in sub.Node.SelectMany(x => x.Input)) needed.Add(inner);
            }
        }
        var nodes = g.Node.Where((_, i) => keep[i]).ToList();
        g.Node.Clear();
        g.Node.AddRange(nodes);
        var initializers = g.Initializer.Where(t => needed.Contains(t.Name)).ToList();
        g.Initializer.Clear();
        g.Initializer.AddRange(initializers);
        var produced = new HashSet<string>(g.Node.SelectMany(n => n.Output), StringComparer.Ordinal);
        var infos = g.ValueInfo.Where(v => produced.Contains(v.Name)).ToList();
        g.ValueInfo.Clear();
        g.ValueInfo.AddRange(infos);
        // Pre-IR-4 models list initializers as inputs too; drop those whose initializer is gone.
        var removed = g.Input.Where(i => formerInitializers.Contains(i.Name) && !needed.Contains(i.Name)).ToList();
        foreach (var r in removed) g.Input.Remove(r);
    }

    private static object? DimObject(TensorShapeProto.Types.Dimension d) =>
        d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => d.DimValue,
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => d.DimParam,
            _ => null,
        };
}

/// <summary>A task head cannot be put on the given encoder with the given options.</summary>
public sealed class TaskHeadException(string message) : OnnxTuneException(message);
