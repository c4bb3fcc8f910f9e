using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class ShapeRuleTests
{
    private static readonly GradientCheckOptions OnlyW = new() { Selection = new ParameterSelection { Trainable = ["w*"] } };

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(-1)]
    public void Flatten_any_axis(int axis)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [2, 3, 4]);
        GradientAssert.Passes(f.Output(f.Node("Flatten", [w], Attr.Int("axis", axis))));
    }

    [Fact]
    public void Unsqueeze_and_Squeeze_with_axes_inputs()
    {
        var f = new ModelFactory(opset: 13);
        var x = f.Input("x", DataType.Float, "batch", 3L);
        var w = f.Param("w", [3]);
        var u = f.Node("Unsqueeze", [w, f.Const("axes_u", [0, -1])]);             // [1, 3, 1]
        var y = f.Node("Mul", [x, f.Node("Squeeze", [u, f.Const("axes_s", [-1])])]); // [batch, 3]
        var z = f.Node("Squeeze", [f.Node("Unsqueeze", [y, f.Const("axes_1", [1])])]); // no axes: every 1-dim (batch=2 stays)
        GradientAssert.Passes(f.Output(z, "batch", 3L), OnlyW);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(-1)]
    public void Concat_of_several_inputs_some_frozen(int axis)
    {
        var f = new ModelFactory();
        var w1 = f.Param("w1", [2, 3]);
        var frozen = f.Param("frozen", [2, 3]);
        var w2 = f.Param("w2", [2, 3]);
        var y = f.Node("Concat", [w1, frozen, w2, w1], Attr.Int("axis", axis));
        GradientAssert.Passes(f.Output(y), OnlyW);
    }

    [Fact]
    public void Concat_with_symbolic_dims()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "n");
        var w = f.Param("w", [1, 2]);
        var wb = f.Node("Expand", [w, f.Node("Concat", [f.Node("Slice", [f.Node("Shape", [x]), f.Const("s0", [0]), f.Const("s1", [1])]), f.Const("two", [2])], Attr.Int("axis", 0))]);
        var y = f.Node("Concat", [x, wb, x], Attr.Int("axis", 1));
        GradientAssert.Passes(f.Output(y, "batch", "n2"), OnlyW with { DimValues = new Dictionary<string, long> { ["batch"] = 3, ["n"] = 2 } });
    }

    [Theory]
    [InlineData(new long[] { 1 }, new long[] { 3 }, null, null)]                         // axis 0 default
    [InlineData(new long[] { 0, 1 }, new long[] { -1, 100 }, new long[] { 1, 2 }, null)] // negative end, clamped end
    [InlineData(new long[] { -2 }, new long[] { 1000 }, new long[] { -1 }, null)]
    [InlineData(new long[] { 0, 4 }, new long[] { 5, 0 }, new long[] { 1, 2 }, new long[] { 2, -1 })]     // step 2 and negative step
    [InlineData(new long[] { -1 }, new long[] { long.MinValue }, new long[] { 0 }, new long[] { -2 })] // reverse with step -2
    [InlineData(new long[] { 1, 0 }, new long[] { 4, 5 }, new long[] { 2, 0 }, new long[] { 3, 1 })]
    public void Slice_with_constant_arguments(long[] starts, long[] ends, long[]? axes, long[]? steps)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [4, 5, 6]);
        var inputs = new List<string> { w, f.Const("starts", starts), f.Const("ends", ends) };
        if (axes is not null) inputs.Add(f.Const("axes", axes));
        if (steps is not null) inputs.Add(f.Const("steps", steps));
        GradientAssert.Passes(f.Output(f.Node("Slice", inputs.ToArray())), OnlyW);
    }

    [Fact]
    public void Slice_with_runtime_ends_and_symbolic_dims()
    {
        // ends computed from the input's shape (as exporters do for x[:, :n-1]); the dims are symbolic.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "n");
        var w = f.Param("w", [1, 1]);
        var xw = f.Node("Mul", [x, w]);
        var n = f.Node("Slice", [f.Node("Shape", [x]), f.Const("one", [1]), f.Const("two", [2])]);
        var end = f.Node("Sub", [n, f.Const("one_b", [1])]);
        var y = f.Node("Slice", [xw, f.Const("zero", [0]), end, f.Const("ax", [1]), f.Const("st", [1])]);
        var z = f.Node("Slice", [y, f.Const("m1", [-1]), f.Const("big", [long.MinValue]), f.Const("ax0", [0]), f.Const("neg", [-1])]);
        GradientAssert.Passes(f.Output(z, "batch", "m"), OnlyW with { DimValues = new Dictionary<string, long> { ["batch"] = 3, ["n"] = 5 } });
    }

    [Theory]
    [InlineData(13, true)]
    [InlineData(13, false)]
    [InlineData(18, true)]
    [InlineData(18, false)]
    public void Split_with_unused_outputs(int opset, bool explicitSizes)
    {
        var f = new ModelFactory(opset: opset);
        var w = f.Param("w", [3, 6]);
        var inputs = explicitSizes ? new[] { w, f.Const("split", [1, 2, 3]) } : [w];
        var attrs = new List<global::Onnx.AttributeProto> { Attr.Int("axis", -1) };
        if (opset >= 18 && !explicitSizes) attrs.Add(Attr.Int("num_outputs", 3));
        var node = f.Editor.AddNode("Split", inputs, ["p0", "p1", "p2"], attrs.ToArray());
        // p1 unused: its gradient must be zeros of its shape.
        var y = f.Node("Concat", [f.Node("Mul", [node.Output[0], node.Output[0]]), node.Output[2]], Attr.Int("axis", 1));
        GradientAssert.Passes(f.Output(y));
    }

    [Fact]
    public void Split_uneven_opset18_num_outputs()
    {
        var f = new ModelFactory(opset: 18);
        var w = f.Param("w", [7, 2]);
        var node = f.Editor.AddNode("Split", [w], ["p0", "p1", "p2"], Attr.Int("axis", 0), Attr.Int("num_outputs", 3));
        var y = f.Node("Add", [f.Node("Mul", [node.Output[2], node.Output[2]]), f.Node("ReduceSum", [node.Output[1], f.Const("a0", [0])])]);
        GradientAssert.Passes(f.Output(y), OnlyW);
    }

    [Theory]
    [InlineData(new long[] { 3, 1 }, new long[] { 2, 3, 4 })]
    [InlineData(new long[] { 1 }, new long[] { 2, 3 })]
    [InlineData(new long[] { 4 }, new long[] { 1, 4 })]
    [InlineData(new long[] { 2, 1, 4 }, new long[] { 3, 1 })] // shape smaller than input: broadcast both ways
    public void Expand_sums_back_to_input_shape(long[] wShape, long[] shape)
    {
        var f = new ModelFactory();
        var w = f.Param("w", wShape);
        GradientAssert.Passes(f.Output(f.Node("Expand", [w, f.Const("shape", shape)])));
    }

    [Fact]
    public void Expand_to_runtime_shape()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "n", 3L);
        var w = f.Param("w", [1, 3]);
        var y = f.Node("Mul", [f.Node("Expand", [w, f.Node("Shape", [x])]), x]);
        GradientAssert.Passes(f.Output(y, "batch", "n", 3L), OnlyW);
    }

    [Theory]
    [InlineData(new long[] { 2, 3 }, new long[] { 1, 2 })]
    [InlineData(new long[] { 2, 1, 3 }, new long[] { 3, 2, 1 })]
    [InlineData(new long[] { 4 }, new long[] { 3 })]
    public void Tile(long[] wShape, long[] repeats)
    {
        var f = new ModelFactory();
        var w = f.Param("w", wShape);
        GradientAssert.Passes(f.Output(f.Node("Tile", [w, f.Const("repeats", repeats)])), OnlyW);
    }

    [Fact]
    public void Shape_subgraph_feeding_Reshape_is_not_differentiated()
    {
        // The exporter's dynamic-reshape pattern: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, with Cast and
        // Equal on the int path. None of these get (or need) a gradient.
        var f = new ModelFactory(opset: 14);
        var x = f.Input("x", DataType.Float, "batch", "seq", 4L);
        var w = f.Param("w", [4, 4]);
        var h = f.Node("MatMul", [x, w]);
        var shape = f.Node("Shape", [h]);
        var b = f.Node("Gather", [shape, f.Editor.AddInitializer(OnnxTune.Onnx.Tensors.TensorProtos.Int64("i0", [0L]), makeUnique: false)], Attr.Int("axis", 0));
        var s = f.Node("Gather", [shape, f.Editor.AddInitializer(OnnxTune.Onnx.Tensors.TensorProtos.Int64("i1", [1L]), makeUnique: false)], Attr.Int("axis", 0));
        var sCast = f.Node("Cast", [f.Node("Cast", [s], Attr.Int("to", (long)DataType.Float))], Attr.Int("to", (long)DataType.Int64));
        var newShape = f.Node("Concat", [f.Node("Unsqueeze", [b, f.Const("a0", [0])]), f.Node("Unsqueeze", [sCast, f.Const("a0b", [0])]), f.Const("two", [2]), f.Const("m1", [-1])], Attr.Int("axis", 0));
        var r = f.Node("Reshape", [h, newShape]);
        var t = f.Node("Transpose", [r], Attr.Ints("perm", 0, 2, 1, 3));
        var model = f.Output(t, "batch", 2L, "seq", 2L);
        GradientAssert.Passes(model, new GradientCheckOptions { DimValues = new Dictionary<string, long> { ["batch"] = 2, ["seq"] = 3 } });
    }
}
