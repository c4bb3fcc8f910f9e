using Onnx;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

/// <summary>
/// Broadcast reductions decided from symbolic dims: tensors of the same symbolic shape need no reduction at all,
/// statically decidable axes get static ReduceSums, and only truly unknown cases keep the run-time path.
/// </summary>
public class SymbolicBroadcastTests
{
    private static GradientCheckOptions Dims(params (string Name, long Value)[] dims) =>
        new() { DimValues = dims.ToDictionary(d => d.Name, d => d.Value) };

    /// <summary>Backward nodes of loss = ReduceSum(first output) w.r.t. <paramref name="parameters"/>.</summary>
    private static (List<NodeProto> Nodes, GraphProto Graph) Backward(ModelProto model, params string[] parameters)
    {
        var work = model.Clone();
        var editor = new GraphEditor(work.Graph);
        var loss = editor.Add("ReduceSum", [work.Graph.Output[0].Name], "loss", Attr.Int("keepdims", 0));
        var forwardCount = work.Graph.Node.Count;
        new BackwardGraphBuilder().Build(editor, loss, parameters, 17);
        return (work.Graph.Node.Skip(forwardCount).ToList(), work.Graph);
    }

    private static long[] ConstantAxes(GraphProto graph, NodeProto reduceSum) =>
        TensorProtos.ToInt64Array(graph.Initializer.Single(t => t.Name == reduceSum.Input[1]));

    // x1, x2 [batch, seq, 8]; bias [8]: h0 = x1 + bias, then Mul/Sub/Div/Add between same-shaped tensors and a residual.
    private static ModelProto SameShapeChain()
    {
        var f = new ModelFactory();
        var x1 = f.Input("x1", DataType.Float, "batch", "seq", 8L);
        var x2 = f.Input("x2", DataType.Float, "batch", "seq", 8L);
        var bias = f.Param("bias", [8]);
        var h0 = f.Node("Add", [x1, bias]);
        var h1 = f.Node("Mul", [h0, x2]);
        var h2 = f.Node("Sub", [h1, h0]);
        var h3 = f.Node("Div", [h2, f.Node("Exp", [x2])]);
        var h4 = f.Node("Mul", [h3, f.Node("Tanh", [h1])]);
        var h5 = f.Node("Add", [h4, h0]);
        return f.Output(h5, "batch", "seq", 8L);
    }

    [Fact]
    public void Same_symbolic_shapes_need_no_reduction_except_the_bias()
    {
        var (nodes, graph) = Backward(SameShapeChain(), "bias");
        Assert.DoesNotContain(nodes, n => n.OpType == "NonZero");
        var reduce = Assert.Single(nodes, n => n.OpType == "ReduceSum");
        Assert.Equal([0L, 1L], ConstantAxes(graph, reduce));
    }

    [Fact]
    public void Same_symbolic_shapes_chain_gradient_is_correct()
    {
        GradientAssert.Passes(SameShapeChain(), Dims(("batch", 2), ("seq", 3)));
    }

    [Fact]
    public void Symbols_flow_through_matmul_reshape_transpose_and_layer_norm()
    {
        // A small attention-like block: no tensor of it is broadcast, so no reduction beyond the bias/LN parameters.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "seq", 8L);
        var w = f.Param("w", [8, 8]);
        var b = f.Param("b", [8]);
        var gamma = f.Param("gamma", [8], 0.5, 1.5);
        var beta = f.Param("beta", [8]);
        var q = f.Node("Add", [f.Node("MatMul", [x, w]), b]);
        var heads = f.Node("Transpose", [f.Node("Reshape", [q, f.Const("split", [0, 0, 2, 4])])], Attr.Ints("perm", 0, 2, 1, 3));
        var scores = f.Node("Softmax", [f.Node("MatMul", [heads, f.Node("Transpose", [heads], Attr.Ints("perm", 0, 1, 3, 2))])], Attr.Int("axis", -1));
        var ctx = f.Node("MatMul", [scores, heads]);
        var merged = f.Node("Reshape", [f.Node("Transpose", [ctx], Attr.Ints("perm", 0, 2, 1, 3)), f.Const("merge", [0, 0, -1])]);
        var res = f.Node("Add", [f.Node("Mul", [merged, q]), x]);
        var ln = f.Node("LayerNormalization", [res, gamma, beta], Attr.Int("axis", -1));
        var model = f.Output(ln, "batch", "seq", 8L);

        var (nodes, graph) = Backward(model, "w", "b", "gamma", "beta");
        Assert.DoesNotContain(nodes, n => n.OpType == "NonZero");
        var parameterReductions = nodes.Where(n => n.OpType == "ReduceSum" && graph.Initializer.Any(t => t.Name == n.Input[1]))
            .Select(n => ConstantAxes(graph, n)).Where(a => a.SequenceEqual([0L, 1L])).Count();
        Assert.Equal(3, parameterReductions); // b, gamma, beta
        GradientAssert.Passes(model, Dims(("batch", 2), ("seq", 3)));
    }

    [Fact]
    public void Static_one_against_symbolic_dim_reduces_that_axis()
    {
        // t [batch, 1, 8] meets [batch, seq, 8]: t's gradient is summed over axis 1, decided statically.
        var f = new ModelFactory();
        var x1 = f.Input("x1", DataType.Float, "batch", 1L, 8L);
        var x2 = f.Input("x2", DataType.Float, "batch", "seq", 8L);
        var w = f.Param("w", [8], 0.5, 1.5);
        var t = f.Node("Mul", [x1, w]);
        var y = f.Node("Mul", [t, x2]);
        var model = f.Output(y, "batch", "seq", 8L);

        var (nodes, graph) = Backward(model, "w");
        Assert.DoesNotContain(nodes, n => n.OpType == "NonZero");
        var axes = nodes.Where(n => n.OpType == "ReduceSum").Select(n => ConstantAxes(graph, n)).ToList();
        Assert.Contains(axes, a => a.SequenceEqual([1L]));
        GradientAssert.Passes(model, Dims(("batch", 2), ("seq", 3)));
    }

    [Fact]
    public void Symbolic_target_against_static_one_output_needs_no_reduction()
    {
        // The graph says the output's first dim is 1, so the input's 'n' is 1 too: nothing to sum.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "n", 8L);
        var v = f.Input("v", DataType.Float, 1L, 8L);
        var w = f.Param("w", [8], 0.5, 1.5);
        var t = f.Node("Mul", [x, w]);
        var y = f.Node("Mul", [t, v]);
        var model = f.Output(y, 1L, 8L);

        var (nodes, graph) = Backward(model, "w");
        Assert.DoesNotContain(nodes, n => n.OpType == "NonZero");
        var reduce = Assert.Single(nodes, n => n.OpType == "ReduceSum");
        Assert.Equal([0L], ConstantAxes(graph, reduce)); // w's own [n, 8] -> [8]
        GradientAssert.Passes(model, Dims(("n", 1)));
    }

    [Theory]
    [InlineData(3, 3)]
    [InlineData(1, 3)]
    [InlineData(3, 1)]
    [InlineData(1, 1)]
    public void Different_symbols_keep_the_runtime_path(long n, long m)
    {
        var f = new ModelFactory();
        var x1 = f.Input("x1", DataType.Float, "batch", "n", 4L);
        var x2 = f.Input("x2", DataType.Float, "batch", "m", 4L);
        var w1 = f.Param("w1", [4], 0.5, 1.5);
        var w2 = f.Param("w2", [4], 0.5, 1.5);
        var y = f.Node("Mul", [f.Node("Mul", [x1, w1]), f.Node("Add", [x2, w2])]);
        var model = f.Output(y, "batch", "k", 4L);

        var (nodes, _) = Backward(model, "w1", "w2");
        Assert.Equal(2, nodes.Count(node => node.OpType == "NonZero"));
        GradientAssert.Passes(model, Dims(("batch", 2), ("n", n), ("m", m)));
    }

    [Fact]
    public void Unnamed_input_dims_get_their_own_symbols()
    {
        // x's second dim has neither value nor name; x and Relu(x) still share it.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 5L);
        f.Editor.Graph.Input.Single(i => i.Name == x).Type.TensorType.Shape.Dim[1].ClearValue();
        var w = f.Param("w", [], 0.5, 1.5);
        var t = f.Node("Mul", [x, w]);
        var y = f.Node("Mul", [t, f.Node("Relu", [t])]);
        var model = f.Output(y);

        var (nodes, graph) = Backward(model, "w");
        Assert.DoesNotContain(nodes, n => n.OpType == "NonZero");
        Assert.All(nodes.Where(n => n.OpType == "ReduceSum"), n => Assert.Equal([0L, 1L], ConstantAxes(graph, n)));
        GradientAssert.Passes(model);
    }

    private static string Scalar(ModelFactory f, string name, long value) =>
        f.Editor.AddInitializer(TensorProtos.Int64(name, [value]), makeUnique: false);

    [Fact]
    public void Shapes_computed_at_run_time_keep_their_symbols()
    {
        // As exporters write BERT: heads split with a shape built from Shape -> Gather -> Unsqueeze -> Concat, and
        // position embeddings sliced to the sequence length read from the input's shape.
        var f = new ModelFactory(opset: 13);
        var x = f.Input("x", DataType.Float, "batch", "seq", 4L);
        var positions = f.Param("positions", [1, 6, 4]);
        var w = f.Param("w", [4, 4]);
        var shape = f.Node("Shape", [x]);
        var seq = f.Node("Unsqueeze", [f.Node("Add", [f.Node("Gather", [shape, Scalar(f, "one", 1)]), Scalar(f, "zero", 0)]), f.Const("ax0", [0])]);
        var pos = f.Node("Slice", [positions, f.Const("s0", [0]), seq, f.Const("ax1", [1])]);
        var h = f.Node("Add", [x, pos]);
        var batch = f.Node("Unsqueeze", [f.Node("Gather", [f.Node("Shape", [h]), Scalar(f, "zero_i", 0)]), f.Const("ax0b", [0])]);
        var seq2 = f.Node("Unsqueeze", [f.Node("Gather", [f.Node("Shape", [h]), Scalar(f, "one_i", 1)]), f.Const("ax0c", [0])]);
        var split = f.Node("Concat", [batch, seq2, f.Const("heads", [2]), f.Const("size", [2])], Attr.Int("axis", 0));
        var q = f.Node("Transpose", [f.Node("Reshape", [f.Node("MatMul", [h, w]), split])], Attr.Ints("perm", 0, 2, 1, 3));
        var scores = f.Node("MatMul", [q, f.Node("Transpose", [q], Attr.Ints("perm", 0, 1, 3, 2))]);
        var mask = f.Node("Unsqueeze", [f.Input("mask", DataType.Float, "batch", "seq"), f.Const("ax12", [1, 2])]);
        var y = f.Node("Mul", [f.Node("Add", [scores, mask]), scores]);
        var model = f.Output(y, "batch", 2L, "seq", "seq");

        // Gradient check first (it clones the model), then the structure on a copy.
        GradientAssert.Passes(model, Dims(("batch", 2), ("seq", 3)));
        var (nodes, graph) = Backward(model, "positions", "w");
        Assert.DoesNotContain(nodes, n => n.OpType == "NonZero");
        var reduce = Assert.Single(nodes, n => n.OpType == "ReduceSum");
        Assert.Equal([0L], ConstantAxes(graph, reduce)); // positions [1, seq, 4] from [batch, seq, 4]
    }

    [Fact]
    public void Inference_tracks_symbols_through_shape_ops()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "seq", 6L);
        var split = f.Node("Reshape", [x, f.Const("s", [0, 0, 2, 3])]);
        var t = f.Node("Transpose", [split], Attr.Ints("perm", 0, 2, 1, 3));
        var back = f.Node("Reshape", [f.Node("Transpose", [t], Attr.Ints("perm", 0, 2, 1, 3)), f.Const("m", [0, -1, 6])]);
        var flat = f.Node("Flatten", [x], Attr.Int("axis", 1));
        var sliced = f.Node("Slice", [x, f.Const("st", [0]), f.Const("en", [long.MaxValue]), f.Const("ax", [1])]);
        var cat = f.Node("Concat", [x, x], Attr.Int("axis", -1));
        var model = f.Output(back);
        var graph = model.Graph;
        var types = TensorTypeInference.Run(graph, TopologicalOrder.Sort(graph), new ConstantTable(graph));

        string?[] Symbols(string name) => Enumerable.Range(0, types[name].Rank!.Value).Select(types[name].SymbolAt).ToArray();
        string Joined(string name) => string.Join("|", Symbols(name));
        Assert.Equal(new long?[] { null, 2, null, 3 }, types[t].Dims);
        Assert.Equal("batch||seq|", Joined(t));
        Assert.Equal(new long?[] { null, null, 6 }, types[back].Dims);
        Assert.Equal("batch|seq|", Joined(back)); // -1 recovered as 'seq'
        Assert.Equal("batch", Symbols(flat)[0]);
        Assert.NotNull(Symbols(flat)[1]); // seq * 6: a fresh symbol of its own
        Assert.NotEqual("seq", Symbols(flat)[1]);
        Assert.Equal("batch|seq|", Joined(sliced));
        Assert.Equal(new long?[] { null, null, 12 }, types[cat].Dims);
        Assert.Equal("batch|seq|", Joined(cat));
    }
}
