using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class CoreRuleTests
{
    [Theory]
    [InlineData("Add")]
    [InlineData("Sub")]
    [InlineData("Mul")]
    [InlineData("Div")]
    public void Binary_ops_with_broadcasting(string op)
    {
        // x[batch,3,4] op w[4] op' v[3,1]; both parameters are broadcast along different axes.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 3L, 4L);
        var w = f.Param("w", [4], 0.5, 1.5);
        var v = f.Param("v", [3, 1], 0.5, 1.5);
        var a = f.Node(op, [x, w]);
        var b = f.Node(op, [v, a]);
        GradientAssert.Passes(f.Output(b, "batch", 3L, 4L));
    }

    [Fact]
    public void Scalar_parameter_broadcasts_everywhere()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 5L);
        var s = f.Param("s", [], 0.5, 1.0);
        GradientAssert.Passes(f.Output(f.Node("Mul", [x, s]), "batch", 5L));
    }

    [Fact]
    public void Broadcast_with_symbolic_dims_uses_runtime_shapes()
    {
        // y has an unknown second dim (symbolic): the reduction axes are found at run time.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "n");
        var w = f.Param("w", [1, 1]);
        GradientAssert.Passes(f.Output(f.Node("Add", [x, w]), "batch", "n"),
            new GradientCheckOptions { DimValues = new Dictionary<string, long> { ["n"] = 3 } });
    }

    [Theory]
    [InlineData(new long[] { 4, 3 }, new long[] { 3, 5 })]
    [InlineData(new long[] { 2, 4, 3 }, new long[] { 3, 5 })]
    [InlineData(new long[] { 2, 4, 3 }, new long[] { 2, 3, 5 })]
    [InlineData(new long[] { 2, 1, 4, 3 }, new long[] { 3, 3, 5 })]
    [InlineData(new long[] { 3 }, new long[] { 3, 5 })]
    [InlineData(new long[] { 4, 3 }, new long[] { 3 })]
    public void MatMul_with_batch_broadcasting(long[] aShape, long[] bShape)
    {
        var f = new ModelFactory();
        var a = f.Param("a", aShape);
        var b = f.Param("b", bShape);
        GradientAssert.Passes(f.Output(f.Node("MatMul", [a, b])));
    }

    [Fact]
    public void MatMul_of_batched_input_and_weight()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "seq", 3L);
        var w = f.Param("w", [3, 4]);
        GradientAssert.Passes(f.Output(f.Node("MatMul", [x, w]), "batch", "seq", 4L));
    }

    [Fact]
    public void MatMul_of_rank4_input_and_weight()
    {
        // The weight gradient transposes x[batch, 2, seq, 3] to [3, batch, 2, seq] and folds it to [3, tokens].
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 2L, "seq", 3L);
        var w = f.Param("w", [3, 4]);
        GradientAssert.Passes(f.Output(f.Node("MatMul", [x, w]), "batch", 2L, "seq", 4L));
    }

    [Fact]
    public void MatMul_weight_gradient_is_an_explicit_transpose_and_a_plain_MatMul()
    {
        // Gemm transA=1 runs 10–38% slower on MLAS than Transpose + MatMul; the Reshape between them keeps ONNX
        // Runtime from fusing the Transpose back into the product.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "seq", 3L);
        var w = f.Param("w", [3, 4]);
        var model = f.Output(f.Node("MatMul", [x, w]), "batch", "seq", 4L);
        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection { Trainable = ["w"] },
            new LossSpec { Kind = LossKind.Mse, OutputName = model.Graph.Output[0].Name }, gradientAccumulation: false);
        var nodes = graphs.Training.Graph.Node;
        var producer = nodes.ToDictionary(n => n.Output[0]);
        var grad = producer[graphs.GradientOutputs[0]];
        while (grad.OpType is "Identity") grad = producer[grad.Input[0]];
        Assert.Equal("MatMul", grad.OpType);
        var reshape = producer[grad.Input[0]];
        Assert.Equal("Reshape", reshape.OpType);
        var transpose = producer[reshape.Input[0]];
        Assert.Equal("Transpose", transpose.OpType);
        Assert.Equal([2L, 0L, 1L], transpose.Attribute.Single(a => a.Name == "perm").Ints);
        Assert.DoesNotContain(nodes, n => n.OpType == "Gemm");
    }

    [Theory]
    [InlineData(0, 0, 1.0f, 1.0f, new long[] { 5 })]
    [InlineData(0, 1, 0.5f, 2.0f, new long[] { 1, 5 })]
    [InlineData(1, 0, 1.5f, 1.0f, new long[] { 4, 1 })]
    [InlineData(1, 1, 1.0f, 0.5f, new long[] { 4, 5 })]
    public void Gemm_all_transpose_combinations(int transA, int transB, float alpha, float beta, long[] cShape)
    {
        var f = new ModelFactory();
        var a = f.Param("a", transA == 1 ? [3, 4] : [4, 3]);
        var b = f.Param("b", transB == 1 ? [5, 3] : [3, 5]);
        var c = f.Param("c", cShape);
        var y = f.Node("Gemm", [a, b, c], Attr.Int("transA", transA), Attr.Int("transB", transB), Attr.Float("alpha", alpha), Attr.Float("beta", beta));
        GradientAssert.Passes(f.Output(y, 4L, 5L));
    }

    [Theory]
    [InlineData("Relu")]
    [InlineData("Sigmoid")]
    [InlineData("Tanh")]
    [InlineData("Exp")]
    [InlineData("Neg")]
    [InlineData("Identity")]
    [InlineData("Abs")]
    public void Unary_activations(string op)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], -2, 2);
        GradientAssert.Passes(f.Output(f.Node(op, [w]), 3L, 4L));
    }

    [Fact]
    public void Softplus_and_LeakyRelu_checked_in_float64_through_equivalent_ops()
    {
        // ORT has no float64 Softplus/LeakyRelu kernels; the checker's float64 copy rewrites them.
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], -2, 2);
        var y = f.Node("LeakyRelu", [f.Node("Softplus", [w])], Attr.Float("alpha", 0.3f));
        var report = GradientAssert.Passes(f.Output(f.Node("LeakyRelu", [f.Node("Sub", [y, f.ConstFloat("shift", [1f])])], Attr.Float("alpha", 0.3f)), 3L, 4L));
        Assert.True(report.DoublePrecision);
    }

    [Theory]
    [InlineData("Log")]
    [InlineData("Sqrt")]
    [InlineData("Reciprocal")]
    public void Unary_ops_on_positive_domain(string op)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], 0.5, 2);
        GradientAssert.Passes(f.Output(f.Node(op, [w]), 3L, 4L));
    }

    [Fact]
    public void LeakyRelu_and_PRelu()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [2, 3, 4], -2, 2);
        var slope = f.Param("slope", [3, 1], 0.1, 0.5);
        var y = f.Node("LeakyRelu", [w], Attr.Float("alpha", 0.2f));
        GradientAssert.Passes(f.Output(f.Node("PRelu", [y, slope]), 2L, 3L, 4L));
    }

    [Fact]
    public void Pow_with_constant_exponent()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], 0.5, 2);
        var e = f.ConstFloat("e", [3f]);
        GradientAssert.Passes(f.Output(f.Node("Pow", [w, e]), 3L, 4L), new GradientCheckOptions { Selection = new ParameterSelection { Trainable = ["w"] } });
    }

    [Theory]
    [InlineData(2f, -2.0, 2.0)]
    [InlineData(1f, -2.0, 2.0)]
    [InlineData(0.5f, 0.5, 2.0)]
    [InlineData(3f, -2.0, 2.0)]
    [InlineData(-1.5f, 0.5, 2.0)]
    public void Pow_with_a_constant_scalar_exponent_uses_its_closed_form(float exponent, double low, double high)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], low, high);
        var e = f.ConstFloat("e", [exponent]);
        GradientAssert.Passes(f.Output(f.Node("Pow", [w, e]), 3L, 4L), new GradientCheckOptions { Selection = new ParameterSelection { Trainable = ["w"] } });
    }

    [Fact]
    public void Pow_with_an_exponent_from_a_constant_node()
    {
        // PyTorch's exporter writes LayerNorm's x² as Pow(x, Constant 2).
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], -2, 2);
        var e = f.Node("Constant", [], Attr.Tensor("value", TensorProtos.Float("two", [2f])));
        var model = f.Output(f.Node("Pow", [w, e]), 3L, 4L);
        GradientAssert.Passes(model, new GradientCheckOptions { Selection = new ParameterSelection { Trainable = ["w"] } });
        var training = ArtifactBuilder.Build(model, new ArtifactOptions
        {
            Selection = new ParameterSelection { Trainable = ["w"] },
            Loss = new LossSpec { Kind = LossKind.Mse, OutputName = model.Graph.Output[0].Name },
        }).Training;
        Assert.Equal(1, training.Graph.Node.Count(n => n.OpType == "Pow"));
    }

    [Theory]
    [InlineData("Softmax", -1)]
    [InlineData("Softmax", 0)]
    [InlineData("Softmax", 1)]
    [InlineData("LogSoftmax", -1)]
    [InlineData("LogSoftmax", 1)]
    public void Softmax_family_on_any_axis(string op, int axis)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [2, 3, 4], -2, 2);
        GradientAssert.Passes(f.Output(f.Node(op, [w], Attr.Int("axis", axis)), 2L, 3L, 4L));
    }

    [Theory]
    [InlineData("ReduceSum", 1)]
    [InlineData("ReduceSum", 0)]
    [InlineData("ReduceMean", 1)]
    [InlineData("ReduceMean", 0)]
    public void Reductions_keepdims(string op, int keepdims)
    {
        var f = new ModelFactory(opset: 17);
        var w = f.Param("w", [2, 3, 4]);
        var axes = f.Const("axes", [1, -1]);
        var y = op == "ReduceSum"
            ? f.Node(op, [w, axes], Attr.Int("keepdims", keepdims))
            : f.Node(op, [w], Attr.Ints("axes", 1, -1), Attr.Int("keepdims", keepdims));
        GradientAssert.Passes(f.Output(y));
    }

    [Fact]
    public void ReduceMean_with_axes_input_at_opset_18()
    {
        var f = new ModelFactory(opset: 18);
        var w = f.Param("w", [2, 3, 4]);
        var axes = f.Const("axes", [0]);
        GradientAssert.Passes(f.Output(f.Node("ReduceMean", [w, axes], Attr.Int("keepdims", 0))));
    }

    [Theory]
    [InlineData(LossKind.CrossEntropy, null)]
    [InlineData(LossKind.CrossEntropy, -100L)]
    [InlineData(LossKind.Mse, null)]
    [InlineData(LossKind.L1, null)]
    [InlineData(LossKind.BceWithLogits, null)]
    public void Loss_blocks(LossKind kind, long? ignoreIndex)
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 3L);
        var w = f.Param("w", [3, 4]);
        var b = f.Param("b", [4]);
        var y = f.Node("Add", [f.Node("MatMul", [x, w]), b]);
        var model = f.Output(y, "batch", 4L);
        var options = new GradientCheckOptions
        {
            Loss = new LossSpec { Kind = kind, IgnoreIndex = ignoreIndex },
            DimValues = new Dictionary<string, long> { ["batch"] = 5 },
        };
        if (ignoreIndex is { } ii)
            options = options with { Inputs = new Dictionary<string, (Array, long[])> { ["labels"] = (new long[] { 0, ii, 3, ii, 1 }, [5]) } };
        GradientAssert.Passes(model, options);
    }

    [Fact]
    public void Cross_entropy_over_tokens_class_dim_last()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", "seq", 3L);
        var w = f.Param("w", [3, 5]);
        var model = f.Output(f.Node("MatMul", [x, w]), "batch", "seq", 5L);
        GradientAssert.Passes(model, new GradientCheckOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, IgnoreIndex = -100 },
            DimValues = new Dictionary<string, long> { ["batch"] = 2, ["seq"] = 3 },
            Inputs = new Dictionary<string, (Array, long[])> { ["labels"] = (new long[] { 0, 4, -100, 2, -100, 1 }, [2, 3]) },
        });
    }

    [Fact]
    public void Shared_tensor_used_twice_accumulates()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 3]);
        var y = f.Node("MatMul", [w, w]);
        GradientAssert.Passes(f.Output(f.Node("Mul", [y, w]), 3L, 3L));
    }
}
