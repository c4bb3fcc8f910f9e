using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class ReductionRuleTests
{
    private static readonly string[] Ops = ["ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"];

    // Before opset 18 these take axes as an attribute, from 18 on as input 1.
    public static TheoryData<string, int, int> OpsOpsetsKeepdims()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var op in Ops)
            foreach (var opset in new[] { 13, 18 })
                foreach (var keepdims in new[] { 0, 1 })
                    data.Add(op, opset, keepdims);
        return data;
    }

    public static TheoryData<string> AllOps() => new(Ops);

    // ReduceLogSum needs a positive sum.
    private static string Param(ModelFactory f, string op, long[] dims) => op == "ReduceLogSum" ? f.Param("w", dims, 0.5, 1.5) : f.Param("w", dims, -2, 2);

    [Theory]
    [MemberData(nameof(OpsOpsetsKeepdims))]
    public void Reduction_over_two_axes(string op, int opset, int keepdims)
    {
        var f = new ModelFactory(opset: opset);
        var w = Param(f, op, [2, 3, 4]);
        var y = opset >= 18
            ? f.Node(op, [w, f.Const("axes", [1, -1])], Attr.Int("keepdims", keepdims))
            : f.Node(op, [w], Attr.Ints("axes", 1, -1), Attr.Int("keepdims", keepdims));
        GradientAssert.Passes(f.Output(y));
    }

    [Theory]
    [MemberData(nameof(AllOps))]
    public void Reduction_over_all_axes_without_axes(string op)
    {
        var f = new ModelFactory(opset: 13);
        var w = Param(f, op, [3, 4]);
        GradientAssert.Passes(f.Output(f.Node(op, [w], Attr.Int("keepdims", 0))));
    }

    [Theory]
    [MemberData(nameof(AllOps))]
    public void Reduction_with_empty_axes_and_noop_is_elementwise(string op)
    {
        var f = new ModelFactory(opset: 18);
        var w = Param(f, op, [3, 4]);
        GradientAssert.Passes(f.Output(f.Node(op, [w, f.Const("axes", [])], Attr.Int("noop_with_empty_axes", 1))));
    }

    [Theory]
    [InlineData("ReduceMax", 0)]
    [InlineData("ReduceMax", 1)]
    [InlineData("ReduceProd", 0)]
    [InlineData("ReduceL2", 1)]
    public void Reduction_with_runtime_axes(string op, int keepdims)
    {
        var f = new ModelFactory(opset: 18);
        var axes = f.Input("axes", DataType.Int64, 1L);
        var w = Param(f, op, [2, 3, 4]);
        GradientAssert.Passes(f.Output(f.Node(op, [w, axes], Attr.Int("keepdims", keepdims))), new GradientCheckOptions
        {
            Inputs = new Dictionary<string, (Array, long[])> { ["axes"] = (new long[] { 1 }, [1]) },
        });
    }

    [Theory]
    [InlineData("ReduceMax", 13)]
    [InlineData("ReduceMin", 13)]
    [InlineData("ReduceMax", 18)]
    public void ReduceMax_Min_ties_split_the_gradient_equally_as_pytorch_amax_does(string op, int opset)
    {
        // Every row holds its extreme twice (w concatenated with itself): each copy gets dY / 2, so w gets dY, as
        // finite differences see; giving each tied position the whole dY would double it.
        var f = new ModelFactory(opset: opset);
        var w = f.Param("w", [2, 3]);
        var x = f.Node("Concat", [w, w], Attr.Int("axis", 1));
        var y = opset >= 18 ? f.Node(op, [x, f.Const("axes", [1])]) : f.Node(op, [x], Attr.Ints("axes", 1));
        GradientAssert.Passes(f.Output(y));
    }

    [Theory]
    [InlineData(13)]
    [InlineData(18)]
    public void ReduceProd_with_zeros_in_the_slices(int opset)
    {
        // Rows without a zero, with one (its position gets the product of the rest) and with two (all zero).
        var f = new ModelFactory(opset: opset);
        float[] data = [0.5f, -1.2f, 0.8f, 1.1f, 0.7f, 0f, -0.9f, 1.3f, 0f, 0.6f, 0f, -0.4f];
        var w = f.Editor.AddInitializer(TensorProtos.Float("w", data, 3, 4), makeUnique: false);
        var y = opset >= 18 ? f.Node("ReduceProd", [w, f.Const("axes", [1])]) : f.Node("ReduceProd", [w], Attr.Ints("axes", 1));
        var report = GradientAssert.Passes(f.Output(y));
        Assert.Equal(12, report.Parameters.Single().ElementsChecked);
    }

    [Fact]
    public void ReduceL2_of_a_zero_slice_has_zero_gradient()
    {
        // The norm is not differentiable at 0; PyTorch's (and the central difference's) value there is 0, not NaN.
        var f = new ModelFactory(opset: 13);
        float[] data = [0.5f, -1.2f, 0.8f, 0f, 0f, 0f];
        var w = f.Editor.AddInitializer(TensorProtos.Float("w", data, 2, 3), makeUnique: false);
        GradientAssert.Passes(f.Output(f.Node("ReduceL2", [w], Attr.Ints("axes", 1))));
    }
}
