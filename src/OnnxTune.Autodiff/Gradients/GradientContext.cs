using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Gradients;

/// <summary>
/// What a gradient rule sees of one forward node, in ONNX Runtime's vocabulary: <see cref="Input"/>/<see cref="Output"/>
/// (forward tensors), <see cref="GradOutput"/> (gradients arriving at outputs), <see cref="IsRequired"/> (skip input
/// gradients nobody needs), and helpers that emit standard ONNX nodes with names unique to this node.
/// </summary>
public sealed class GradientContext
{
    private readonly BackwardGraphState _state;
    private readonly string?[] _gradOutputs;
    private readonly bool[] _required;
    private readonly string _prefix;

    internal GradientContext(BackwardGraphState state, NodeProto node, string?[] gradOutputs, bool[] required)
    {
        _state = state;
        Node = node;
        _gradOutputs = gradOutputs;
        _required = required;
        _prefix = (string.IsNullOrEmpty(node.Name) ? node.OpType + "_" + (node.Output.Count > 0 ? node.Output[0] : "") : node.Name) + "_Grad/";
    }

    /// <summary>The forward node.</summary>
    public NodeProto Node { get; }

    /// <summary>Default-domain opset of the graph being built.</summary>
    public long Opset => _state.Opset;

    /// <summary>Number of forward inputs.</summary>
    public int InputCount => Node.Input.Count;

    /// <summary>Forward input <paramref name="i"/> (empty string when an optional input is absent).</summary>
    public string Input(int i) => i < Node.Input.Count ? Node.Input[i] : "";

    /// <summary>True when optional input <paramref name="i"/> is present.</summary>
    public bool HasInput(int i) => i < Node.Input.Count && Node.Input[i].Length > 0;

    /// <summary>Forward output <paramref name="i"/>.</summary>
    public string Output(int i) => Node.Output[i];

    /// <summary>
    /// Forward output <paramref name="i"/>, adding it to the forward node when the model left that optional output out
    /// (e.g. LayerNormalization's Mean and InvStdDev): the training graph then keeps what the forward kernel computed
    /// anyway instead of the backward recomputing it.
    /// </summary>
    public string ForwardOutput(int i)
    {
        while (Node.Output.Count <= i) Node.Output.Add("");
        if (Node.Output[i].Length == 0)
        {
            var name = _state.Editor.UniqueName((string.IsNullOrEmpty(Node.Name) ? Node.OpType : Node.Name) + "_output_" + i);
            Node.Output[i] = name;
            // Mark the name as taken (the editor tracks names by reservation).
            if (!_state.Editor.IsUsed(name)) _state.Editor.Reserve(name);
        }
        return Node.Output[i];
    }

    /// <summary>Gradient arriving at output <paramref name="i"/>, or null when nothing downstream needs it.</summary>
    public string? GradOutput(int i) => i < _gradOutputs.Length ? _gradOutputs[i] : null;

    /// <summary>Gradient at output <paramref name="i"/>, or zeros shaped like that output.</summary>
    public string GradOutputOrZeros(int i) => GradOutput(i) ?? ZerosLike(Output(i));

    /// <summary>True when the gradient of input <paramref name="i"/> is needed.</summary>
    public bool IsRequired(int i) => i < _required.Length && _required[i];

    /// <summary>Statically known type/shape of a tensor, or null.</summary>
    public TensorTypeInfo? TypeOf(string tensor) => _state.Types.TryGetValue(tensor, out var t) ? t : null;

    /// <summary>Static rank of a tensor when known.</summary>
    public int? RankOf(string tensor) => TypeOf(tensor)?.Rank;

    /// <summary>Element type of a tensor (float when unknown).</summary>
    public DataType ElementTypeOf(string tensor) => TypeOf(tensor)?.ElementType is { } t and not DataType.Undefined ? t : DataType.Float;

    /// <summary>Known small int64 constant value of a tensor (Constant node or initializer).</summary>
    public long[]? ConstantInts(string tensor) => _state.Constants.TryGet(tensor, out var v) ? v : null;

    /// <summary>Values of a float32 initializer or <c>Constant</c> node output (e.g. Resize scales, a Pow exponent), or null.</summary>
    public float[]? ConstantFloats(string tensor)
    {
        if (_state.Editor.Graph.Initializer.FirstOrDefault(t => t.Name == tensor) is { } init)
            return init.DataType == (int)DataType.Float ? TensorProtos.ToFloatArray(init) : null;
        var node = _state.Editor.Graph.Node.FirstOrDefault(n => n.OpType == "Constant" && n.Domain is "" or "ai.onnx" && n.Output.Count == 1 && n.Output[0] == tensor);
        return node?.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { DataType: (int)DataType.Float } t ? TensorProtos.ToFloatArray(t) : null;
    }

    /// <summary>A unique intermediate tensor name for this node's backward pass.</summary>
    public string Intermediate(string hint) => _state.Editor.UniqueName(_prefix + hint);

    /// <summary>Emits a single-output node; returns its output name.</summary>
    public string Op(string opType, params string[] inputs) => Op(opType, inputs, []);

    /// <summary>Emits a single-output node with attributes; returns its output name.</summary>
    public string Op(string opType, string[] inputs, params AttributeProto[] attributes)
    {
        var output = Intermediate(opType);
        var node = _state.Editor.AddNode(opType, inputs, [output], attributes);
        node.Name = _state.Editor.UniqueName(output);
        _state.Types.Remove(output);
        return output;
    }

    /// <summary>Emits a node with several outputs.</summary>
    public string[] OpMulti(string opType, string[] inputs, int outputCount, params AttributeProto[] attributes)
    {
        var outputs = Enumerable.Range(0, outputCount).Select(k => Intermediate($"{opType}_{k}")).ToArray();
        var node = _state.Editor.AddNode(opType, inputs, outputs, attributes);
        node.Name = _state.Editor.UniqueName(outputs[0]);
        return outputs;
    }

    /// <summary>A float scalar constant (rank 0), shared across the graph.</summary>
    public string Scalar(float value) => _state.Scalar(value);

    /// <summary>A float scalar constant of the same element type as <paramref name="like"/>.</summary>
    public string ScalarLike(float value, string like) => _state.Scalar(value, ElementTypeOf(like));

    /// <summary>An int64 scalar constant (rank 0), shared across the graph.</summary>
    public string ScalarInt64(long value) => _state.ScalarInt64(value);

    /// <summary>An int64 1-D constant, shared across the graph.</summary>
    public string Ints(params long[] values) => _state.Ints(values);

    /// <summary>Shape of a tensor (one Shape node per tensor).</summary>
    public string ShapeOf(string tensor) => _state.ShapeOf(tensor);

    /// <summary>Zeros shaped like <paramref name="tensor"/>.</summary>
    public string ZerosLike(string tensor) => Op("Mul", tensor, ScalarLike(0f, tensor));

    /// <summary>Zeros of the runtime shape <paramref name="shape"/> (int64 1-D) with the element type of <paramref name="like"/>.</summary>
    public string ZerosOfShape(string shape, string like) =>
        Op("ConstantOfShape", [shape], Attr.Tensor("value", ElementTypeOf(like) == DataType.Double
            ? TensorProtos.Double("zero", [0.0], 1) : TensorProtos.Float("zero", [0f], 1)));

    /// <summary>
    /// Declares that the emitted backward nodes need default-domain opset <paramref name="version"/> or newer (e.g.
    /// ScatterND's <c>reduction</c> attribute, opset 16); the training graph's opset import is raised to the highest
    /// version any rule declared.
    /// </summary>
    public void RequireOpset(long version) => _state.RequiredOpset = Math.Max(_state.RequiredOpset, version);

    /// <summary>Default-domain opset the backward nodes need (at least <see cref="Opset"/>).</summary>
    public long EffectiveOpset => Math.Max(_state.Opset, _state.RequiredOpset);

    /// <summary>Emits ReduceSum over static axes (opset-13 form: axes as input).</summary>
    public string ReduceSum(string x, long[] axes, bool keepDims) =>
        Op("ReduceSum", [x, Ints(axes)], Attr.Int("keepdims", keepDims ? 1 : 0));

    /// <summary>Reshapes <paramref name="x"/> to the runtime shape of <paramref name="like"/>.</summary>
    public string ReshapeLike(string x, string like) => Op("Reshape", x, ShapeOf(like));

    /// <summary>
    /// Sums a gradient of the broadcast output shape back to the shape of <paramref name="target"/>, knowing only the
    /// gradient's rank. Prefer the overloads that describe the gradient's shape: they avoid run-time reductions.
    /// </summary>
    public string SumToShapeOf(string grad, string target, int? gradRank) =>
        _state.SumToShapeOf(this, grad, target, gradRank is { } r ? new TensorTypeInfo(ElementTypeOf(grad), new long?[r]) : null);

    /// <summary>
    /// Sums a gradient back to the shape of <paramref name="target"/>, where the gradient has the shape of the forward
    /// tensor <paramref name="gradShapeLike"/> (usually the node's output). Axes whose sizes are statically equal
    /// (same number or same symbol) are left alone; a gradient that needs no reduction is returned as is.
    /// </summary>
    public string SumToShapeOf(string grad, string target, string gradShapeLike) =>
        _state.SumToShapeOf(this, grad, target, TypeOf(gradShapeLike));

    /// <summary>
    /// Sums a gradient whose shape is described by <paramref name="gradType"/> (dims and symbols; null when unknown)
    /// back to the shape of <paramref name="target"/>.
    /// </summary>
    public string SumToShapeOf(string grad, string target, TensorTypeInfo? gradType) => _state.SumToShapeOf(this, grad, target, gradType);
}

/// <summary>Shared state while one backward graph is emitted.</summary>
internal sealed class BackwardGraphState(GraphEditor editor, Dictionary<string, TensorTypeInfo> types, ConstantTable constants, long opset)
{
    private readonly Dictionary<(float, DataType), string> _scalars = [];
    private readonly Dictionary<string, string> _ints = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _shapes = new(StringComparer.Ordinal);

    public GraphEditor Editor { get; } = editor;
    public Dictionary<string, TensorTypeInfo> Types { get; } = types;
    public ConstantTable Constants { get; } = constants;
    public long Opset { get; } = opset;
    public long RequiredOpset { get; set; } = opset;

    public string Scalar(float value, DataType type = DataType.Float)
    {
        if (_scalars.TryGetValue((value, type), out var name)) return name;
        var tensor = type switch
        {
            DataType.Float => TensorProtos.Float("grad_const_f", [value]),
            DataType.Double => TensorProtos.Double("grad_const_d", [value]),
            _ => throw new OnnxTuneException($"Gradient constants of element type {type} are not supported (float and double are)."),
        };
        name = Editor.AddInitializer(tensor);
        _scalars[(value, type)] = name;
        return name;
    }

    public string ScalarInt64(long value)
    {
        var key = "scalar:" + value;
        if (_ints.TryGetValue(key, out var name)) return name;
        name = Editor.AddInitializer(TensorProtos.Int64("grad_const_i", [value]));
        _ints[key] = name;
        return name;
    }

    public string Ints(params long[] values)
    {
        var key = string.Join(",", values);
        if (_ints.TryGetValue(key, out var name)) return name;
        name = Editor.AddInitializer(TensorProtos.Int64("grad_const_i", values, values.Length));
        _ints[key] = name;
        return name;
    }

    public string ShapeOf(string tensor)
    {
        if (_shapes.TryGetValue(tensor, out var name)) return name;
        name = Editor.UniqueName(tensor + "_shape");
        var node = Editor.AddNode("Shape", [tensor], [name]);
        node.Name = Editor.UniqueName(name);
        _shapes[tensor] = name;
        return name;
    }

    public string SumToShapeOf(GradientContext ctx, string grad, string target, TensorTypeInfo? gradType)
    {
        var t = TensorTypeInference.Sym(Types.TryGetValue(target, out var ti) ? ti : null);
        var y = TensorTypeInference.Sym(gradType);
        if (t is not null && y is not null && y.Length >= t.Length)
        {
            var rx = t.Length;
            var pad = y.Length - rx;
            var g = grad;
            if (pad > 0)
                g = ctx.ReduceSum(g, Enumerable.Range(0, pad).Select(i => (long)i).ToArray(), keepDims: false);
            // Per axis, does the target (x) differ from the gradient (y)? Broadcasting leaves x = y or x = 1.
            var axes = new List<long>();
            var decided = true;
            for (var i = 0; i < rx; i++)
            {
                SymDim dx = t[i], dy = y[pad + i];
                if (dx.Value is { } v)
                {
                    if (v == 1 && !dy.IsOne) axes.Add(i);
                }
                else if (!dy.IsOne && !dx.SameAs(dy))
                    decided = false;
            }
            if (decided) return axes.Count == 0 ? g : ctx.ReduceSum(g, [.. axes], keepDims: true);
            // Some sizes are only known at run time: sum over every axis where the target has size 1 (a no-op
            // where the gradient has size 1 too), found at run time.
            var isOne = ctx.Op("Equal", ShapeOf(target), Ints(1));
            var dynamicAxes = ctx.Op("Reshape", ctx.Op("NonZero", isOne), Ints(-1));
            return ctx.Op("ReduceSum", [g, dynamicAxes], Onnx.Graph.Attr.Int("keepdims", 1), Onnx.Graph.Attr.Int("noop_with_empty_axes", 1));
        }
        // Rank unknown: pad the target shape with ones on the left at run time, then as above.
        var sx = ShapeOf(target);
        var padCount = ctx.Op("Sub", ctx.Op("Size", ShapeOf(grad)), ctx.Op("Size", sx));
        var padOnes = ctx.Op("ConstantOfShape", [ctx.Op("Reshape", padCount, Ints(1))],
            Onnx.Graph.Attr.Tensor("value", TensorProtos.Int64("one", [1L], 1)));
        var padded = ctx.Op("Concat", [padOnes, sx], Onnx.Graph.Attr.Int("axis", 0));
        var dynAxes = ctx.Op("Reshape", ctx.Op("NonZero", ctx.Op("Equal", padded, Ints(1))), Ints(-1));
        var summed = ctx.Op("ReduceSum", [grad, dynAxes], Onnx.Graph.Attr.Int("keepdims", 1), Onnx.Graph.Attr.Int("noop_with_empty_axes", 1));
        return ctx.Op("Reshape", summed, sx);
    }
}
