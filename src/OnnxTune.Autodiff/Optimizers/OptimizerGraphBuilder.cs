using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Optimizers;

/// <summary>
/// Builds <c>optimizer_model.onnx</c>: one update of every trainable parameter, from default-domain ONNX ops only.
/// Inputs are <c>learning_rate</c> (float, <c>[]</c>), <c>step</c> (int64, <c>[]</c>, 1-based) and, per parameter,
/// <c>&lt;p&gt;</c>, <c>&lt;p&gt;.grad</c> and its state tensors; outputs are <c>&lt;p&gt;.out</c> and the states' <c>.out</c>.
/// </summary>
public static class OptimizerGraphBuilder
{
    /// <summary>Opset used when the source model's opset is not given.</summary>
    public const long DefaultOpset = 17;

    /// <summary>Name of the learning-rate input.</summary>
    public const string LearningRateInput = ArtifactContract.LearningRateInput;

    /// <summary>Name of the step input.</summary>
    public const string StepInput = ArtifactContract.StepInput;

    /// <summary>Suffix of the gradient inputs.</summary>
    public const string GradientSuffix = ArtifactContract.GradientSuffix;

    /// <summary>Suffix of every output.</summary>
    public const string OutputSuffix = ArtifactContract.OptimizerOutputSuffix;

    /// <summary>
    /// Model metadata key holding <see cref="Signature"/> of the update the graph computes, so a runtime can tell an
    /// OnnxTune optimizer graph (which its fused CPU kernel reproduces) from a custom one.
    /// </summary>
    public const string SignatureMetadataKey = "onnxtune.optimizer";

    /// <summary>
    /// The hyper-parameters that define the update (everything but the learning rate, which is a graph input), as a
    /// canonical string.
    /// </summary>
    public static string Signature(OptimizerSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        static string R(double v) => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        return spec.Kind switch
        {
            OptimizerKind.AdamW => $"adamw;beta1={R(spec.Beta1)};beta2={R(spec.Beta2)};eps={R(spec.Epsilon)};weight_decay={R(spec.WeightDecay)};max_grad_norm={(spec.MaxGradNorm is { } m ? R(m) : "none")}",
            _ => $"sgd;momentum={R(spec.Momentum)};dampening={R(spec.Dampening)};nesterov={spec.Nesterov};weight_decay={R(spec.WeightDecay)};max_grad_norm={(spec.MaxGradNorm is { } n ? R(n) : "none")}",
        };
    }

    /// <summary>Builds the optimizer model for <paramref name="parameters"/> (float or double, fixed shapes).</summary>
    /// <param name="parameters">Trainable parameters, in manifest order.</param>
    /// <param name="spec">Optimizer kind and hyper-parameters.</param>
    /// <param name="opset">Default-domain opset (the source model's); <see cref="DefaultOpset"/> when null.</param>
    /// <exception cref="OnnxTuneException">A hyper-parameter is out of range, a parameter is not floating point
    /// or has a symbolic dim, or the opset is older than 13.</exception>
    public static ModelProto Build(IReadOnlyList<TensorSpec> parameters, OptimizerSpec spec, long? opset = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(spec);
        var version = opset ?? DefaultOpset;
        if (version < 13)
            throw new UnsupportedModelException($"Optimizer graphs need opset 13 or newer; {version} was requested.");
        if (parameters.Count == 0)
            throw new OnnxTuneException("The optimizer graph needs at least one trainable parameter; none was given.");
        var block = CreateBlock(spec);

        var graph = new GraphProto { Name = $"{spec.Kind.ToString().ToLowerInvariant()}_optimizer" };
        var editor = new GraphEditor(graph);
        editor.Reserve(LearningRateInput);
        editor.Reserve(StepInput);
        editor.AddInput(ValueInfos.Tensor(LearningRateInput, DataType.Float));
        editor.AddInput(ValueInfos.Tensor(StepInput, DataType.Int64));
        var context = new OptimizerGraphContext(editor, LearningRateInput, StepInput);

        var values = new List<OptimizerParameterValues>(parameters.Count);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in parameters)
        {
            if (!seen.Add(p.Name))
                throw new OnnxTuneException($"Parameter '{p.Name}' is listed twice for the optimizer graph.");
            var type = OnnxElementTypes.Parse(p.ElementType, p.Name);
            if (type is not (DataType.Float or DataType.Double))
                throw new OnnxTuneException($"Parameter '{p.Name}' has element type {p.ElementType}; the optimizer updates float and double parameters only.");
            var dims = p.FixedDims;
            for (var i = 0; i < dims.Length; i++)
                if (dims[i] < 0)
                    throw new OnnxTuneException($"Parameter '{p.Name}' has symbolic dim {i} ('{p.Shape[i]}'); parameters need fixed shapes.");
            var shape = dims.Cast<object?>().ToArray();
            var names = new List<string> { p.Name, p.Name + GradientSuffix };
            names.AddRange(block.StateSuffixes.Select(s => p.Name + s));
            foreach (var n in names)
            {
                editor.Reserve(n);
                editor.AddInput(ValueInfos.Tensor(n, type, shape));
            }
            var outputs = new List<string> { p.Name + OutputSuffix };
            outputs.AddRange(block.StateSuffixes.Select(s => p.Name + s + OutputSuffix));
            foreach (var o in outputs)
            {
                editor.Reserve(o); // the update's last node writes it (OptimizerGraphContext.Op with this name)
                editor.AddOutput(ValueInfos.Tensor(o, type, shape));
            }
            values.Add(new OptimizerParameterValues(p.Name, type, p.Name, p.Name + GradientSuffix, names.Skip(2).ToArray(), outputs));
        }

        if (spec.MaxGradNorm is { } maxNorm)
            values = Clip(context, values, maxNorm);
        foreach (var v in values)
            block.EmitUpdate(context, v);

        var model = new ModelProto
        {
            IrVersion = IrVersionFor(version),
            ProducerName = "OnnxTune",
            Graph = graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = version });
        model.MetadataProps.Add(new StringStringEntryProto { Key = SignatureMetadataKey, Value = Signature(spec) });
        return model;
    }

    /// <summary>State-tensor suffixes the optimizer keeps per parameter (matches <see cref="OptimizerSpec.StateSuffixes"/>).</summary>
    public static IReadOnlyList<string> StateSuffixes(OptimizerSpec spec) => CreateBlock(spec).StateSuffixes;

    internal static IOptimizerBlock CreateBlock(OptimizerSpec spec)
    {
        static void Require(bool ok, string message)
        {
            if (!ok) throw new OnnxTuneException(message);
        }
        Require(double.IsFinite(spec.LearningRate) && spec.LearningRate >= 0, $"Invalid learning rate: {spec.LearningRate} (must be >= 0).");
        Require(spec.WeightDecay >= 0, $"Invalid weight_decay value: {spec.WeightDecay} (must be >= 0).");
        if (spec.MaxGradNorm is { } mg)
            Require(double.IsFinite(mg) && mg > 0, $"Invalid max_grad_norm: {mg} (must be > 0).");
        switch (spec.Kind)
        {
            case OptimizerKind.AdamW:
                Require(spec.Beta1 is >= 0 and < 1, $"Invalid beta parameter at index 0: {spec.Beta1} (must be in [0, 1)).");
                Require(spec.Beta2 is >= 0 and < 1, $"Invalid beta parameter at index 1: {spec.Beta2} (must be in [0, 1)).");
                Require(spec.Epsilon >= 0, $"Invalid epsilon value: {spec.Epsilon} (must be >= 0).");
                return new AdamWBlock(spec.Beta1, spec.Beta2, spec.Epsilon, spec.WeightDecay);
            case OptimizerKind.Sgd:
                Require(spec.Momentum >= 0, $"Invalid momentum value: {spec.Momentum} (must be >= 0).");
                Require(!spec.Nesterov || (spec.Momentum > 0 && spec.Dampening == 0),
                    "Nesterov momentum requires a momentum > 0 and zero dampening.");
                return new SgdBlock(spec.Momentum, spec.Dampening, spec.Nesterov, spec.WeightDecay);
            default:
                throw new OnnxTuneException($"Unknown optimizer kind '{spec.Kind}'.");
        }
    }

    // torch.nn.utils.clip_grad_norm_: total = ‖(‖g_i‖)‖, coef = max_norm / (total + 1e-6), clamped to <= 1, g_i *= coef.
    private static List<OptimizerParameterValues> Clip(OptimizerGraphContext c, List<OptimizerParameterValues> values, double maxNorm)
    {
        string? sum = null;
        foreach (var v in values)
        {
            var sq = c.Op("ReduceSumSquare", [v.Gradient], null, Attr.Int("keepdims", 0));
            if (v.Type != DataType.Float) sq = c.Cast(sq, DataType.Float);
            sum = sum is null ? sq : c.Op("Add", [sum, sq]);
        }
        var total = c.Op("Sqrt", [sum!], "clip_grad_norm.total_norm");
        var coef = c.Op("Div", [c.Constant(maxNorm, DataType.Float), c.Op("Add", [total, c.Constant(1e-6, DataType.Float)])]);
        var clamped = c.Op("Min", [coef, c.Constant(1, DataType.Float)], "clip_grad_norm.coef");
        return values.Select(v =>
        {
            var f = v.Type == DataType.Float ? clamped : c.DoubleScalar("clip.coef", v.Type, () => c.Cast(clamped, DataType.Double));
            return v with { Gradient = c.Op("Mul", [v.Gradient, f]) };
        }).ToList();
    }

    private static long IrVersionFor(long opset) => opset switch
    {
        <= 14 => 7,
        <= 18 => 8,
        <= 20 => 9,
        <= 22 => 10,
        _ => 11,
    };
}
