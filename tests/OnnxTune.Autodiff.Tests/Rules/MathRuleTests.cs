using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx.Graph;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class MathRuleTests
{
    private static readonly GradientCheckOptions OnlyW = new() { Selection = new ParameterSelection { Trainable = ["w*"] } };

    [Fact]
    public void Erf_checked_in_float32()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], -2, 2);
        GradientAssert.Passes(f.Output(f.Node("Erf", [w])), requireDouble: false);
    }

    [Fact]
    public void Cast_between_float_types_and_to_int_path()
    {
        // float -> double -> float carries the gradient; the int cast branch is pruned (no gradient, no error).
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4]);
        var d = f.Node("Cast", [w], Attr.Int("to", (long)DataType.Double));
        var back = f.Node("Cast", [f.Node("Mul", [d, d])], Attr.Int("to", (long)DataType.Float));
        var asInt = f.Node("Cast", [w], Attr.Int("to", (long)DataType.Int64));
        var reshaped = f.Node("Reshape", [back, f.Node("Shape", [asInt])]);
        GradientAssert.Passes(f.Output(reshaped));
    }

    [Fact]
    public void Where_with_broadcasting_and_frozen_condition()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 3L, 4L);
        var wa = f.Param("wa", [4]);
        var wb = f.Param("wb", [3, 1]);
        var c = f.Node("Greater", [x, f.ConstFloat("zero", [0f])]);
        GradientAssert.Passes(f.Output(f.Node("Where", [c, wa, wb]), "batch", 3L, 4L), OnlyW with { DimValues = new Dictionary<string, long> { ["batch"] = 3 } });
    }

    [Theory]
    [InlineData("Max")]
    [InlineData("Min")]
    public void Max_Min_variadic_with_broadcasting(string op)
    {
        var f = new ModelFactory();
        var wa = f.Param("wa", [2, 3]);
        var wb = f.Param("wb", [3]);
        var wc = f.Param("wc", [2, 1]);
        GradientAssert.Passes(f.Output(f.Node(op, [wa, wb, wc])));
    }

    [Fact]
    public void Max_ties_split_the_gradient_equally_as_pytorch_does()
    {
        // max(w, w) == w: each of the two tied inputs gets dY / 2, so the total is dY (finite differences agree).
        var f = new ModelFactory();
        var w = f.Param("w", [2, 3]);
        GradientAssert.Passes(f.Output(f.Node("Max", [w, w, f.Node("Neg", [f.Node("Abs", [w])])])));
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Clip_with_trainable_bounds(bool hasMin, bool hasMax)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [4, 5], -2, 2);
        var lo = hasMin ? f.Param("w_lo", [], -0.7, -0.6) : "";
        var hi = hasMax ? f.Param("w_hi", [], 0.6, 0.7) : "";
        var inputs = hasMax ? new[] { w, lo, hi } : [w, lo];
        GradientAssert.Passes(f.Output(f.Node("Clip", inputs)));
    }

    [Fact]
    public void Sum_and_Mean_with_broadcasting()
    {
        var f = new ModelFactory();
        var wa = f.Param("wa", [2, 3]);
        var wb = f.Param("wb", [3]);
        var wc = f.Param("wc", []);
        var y = f.Node("Mul", [f.Node("Mean", [wa, wb, wc]), f.Node("Sum", [wb, wc])]);
        GradientAssert.Passes(f.Output(y), requireDouble: false); // ORT's Mean has no float64 kernel
    }

    [Theory]
    [InlineData(-1, new long[] { 4 }, true)]
    [InlineData(-2, new long[] { 3, 4 }, true)]
    [InlineData(1, new long[] { 3, 4 }, false)]
    [InlineData(2, new long[] { 1 }, true)]
    public void LayerNormalization_axis_scale_bias(int axis, long[] paramShape, bool withBias)
    {
        var f = new ModelFactory(opset: 17);
        var x = f.Input("x", DataType.Float, "batch", 3L, 4L);
        var wx = f.Param("w_in", [3, 4], 0.5, 1.5);
        var scale = f.Param("w_scale", paramShape, 0.5, 1.5);
        var inputs = new List<string> { f.Node("Mul", [x, wx]), scale };
        if (withBias) inputs.Add(f.Param("w_bias", paramShape));
        var y = f.Node("LayerNormalization", inputs.ToArray(), Attr.Int("axis", axis), Attr.Float("epsilon", 1e-3f));
        GradientAssert.Passes(f.Output(y, "batch", 3L, 4L), OnlyW with { DimValues = new Dictionary<string, long> { ["batch"] = 2 } });
    }

    [Theory]
    [InlineData(-1, new long[] { 4 })]
    [InlineData(1, new long[] { 3, 4 })]
    public void LayerNormalization_in_float32_reads_the_forward_statistics(int axis, long[] paramShape)
    {
        // In the stash type the backward uses the forward node's Mean/InvStdDev outputs (added to the node).
        var f = new ModelFactory(opset: 17);
        var x = f.Input("x", DataType.Float, "batch", 3L, 4L);
        var wx = f.Param("w_in", [3, 4], 0.5, 1.5);
        var y = f.Node("LayerNormalization", [f.Node("Mul", [x, wx]), f.Param("w_scale", paramShape, 0.5, 1.5), f.Param("w_bias", paramShape)],
            Attr.Int("axis", axis), Attr.Float("epsilon", 1e-3f));
        var model = f.Output(y, "batch", 3L, 4L);
        var options = OnlyW with { PreferDoublePrecision = false, DimValues = new Dictionary<string, long> { ["batch"] = 2 } };
        var report = GradientAssert.Passes(model, options, requireDouble: false);
        Assert.False(report.DoublePrecision);

        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection { Trainable = ["w*"] }, new LossSpec { Kind = LossKind.Mse, OutputName = model.Graph.Output[0].Name }, gradientAccumulation: false);
        var ln = Assert.Single(graphs.Training.Graph.Node, n => n.OpType == "LayerNormalization");
        Assert.Equal(3, ln.Output.Count(o => o.Length > 0));
        Assert.DoesNotContain(graphs.Training.Graph.Node, n => n.OpType is "Sqrt" or "Reciprocal");
        Assert.Single(graphs.Eval.Graph.Node, n => n.OpType == "LayerNormalization" && n.Output.Count(o => o.Length > 0) == 1);
    }

    [Fact]
    public void LayerNormalization_with_symbolic_rank_unknown_input()
    {
        // The input's rank is unknown to the builder (Reshape to a runtime shape), so the normalized axes are found at run time.
        var f = new ModelFactory(opset: 17);
        var x = f.Input("x", DataType.Float, "batch", 6L);
        var shape = f.Input("shape", DataType.Int64, "r");
        var wx = f.Param("w_in", [6], 0.5, 1.5);
        var h = f.Node("Reshape", [f.Node("Mul", [x, wx]), shape]);
        var y = f.Node("LayerNormalization", [h, f.Param("w_scale", [3], 0.5, 1.5), f.Param("w_bias", [3])]);
        var model = f.Output(f.Node("Reshape", [y, f.Const("flat", [-1])]), "n");
        GradientAssert.Passes(model, OnlyW with
        {
            Inputs = new Dictionary<string, (Array, long[])>
            {
                ["x"] = (Enumerable.Range(0, 12).Select(i => (float)Math.Sin(i)).ToArray(), [2, 6]),
                ["shape"] = (new long[] { 2, 2, 3 }, [3]),
            },
        });
    }

    [Fact]
    public void Gelu_erf_gradient_matches_the_analytic_derivative_to_float32_precision()
    {
        // Erf has no float64 kernel, so the finite-difference check runs in float32 with a loose tolerance; this
        // pins the rule down tightly: d/dx sum(r * gelu(x)) = r * (Phi(x) + x phi(x)), with erf evaluated in float64.
        var f = new ModelFactory(opset: 20);
        var w = f.Param("w", [64], -3, 3);
        var rng = new Random(11);
        var r = Enumerable.Range(0, 64).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var loss = f.Node("ReduceSum", [f.Node("Mul", [f.Node("Gelu", [w]), f.ConstFloat("r", r, 64)])], Attr.Int("keepdims", 0));
        var model = f.Output(loss);
        var x = OnnxTune.Onnx.Tensors.TensorProtos.ToFloatArray(model.Graph.Initializer.First(t => t.Name == "w"));
        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection { Trainable = ["w"] }, new LossSpec { Kind = LossKind.None, OutputName = loss }, gradientAccumulation: false);
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(OnnxTune.Onnx.ModelIO.OnnxModelWriter.ToBytes(graphs.Training));
        using var input = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(x, [64]);
        using var runOptions = new Microsoft.ML.OnnxRuntime.RunOptions();
        using var outputs = session.Run(runOptions, new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["w"] = input }, [graphs.GradientOutputs[0]]);
        var grad = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        for (var i = 0; i < 64; i++)
        {
            double xi = x[i];
            var expected = r[i] * (0.5 * (1 + Erf(xi / Math.Sqrt(2))) + xi * Math.Exp(-xi * xi / 2) / Math.Sqrt(2 * Math.PI));
            Assert.True(Math.Abs(grad[i] - expected) <= 2e-6 + 2e-6 * Math.Abs(expected), $"x={xi:R}: rule {grad[i]:R}, analytic {expected:R}");
        }
    }

    // erf by its Maclaurin series (|x| <= 3 here: double keeps ~1e-12 after cancellation).
    private static double Erf(double x)
    {
        double sum = 0, term = x;
        for (var n = 0; n < 200; n++)
        {
            sum += term / (2 * n + 1);
            term *= -x * x / (n + 1);
        }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }

    [Theory]
    [InlineData("none")]
    [InlineData("tanh")]
    public void Gelu_opset_20(string approximate)
    {
        var f = new ModelFactory(opset: 20);
        var w = f.Param("w", [3, 4], -3, 3);
        GradientAssert.Passes(f.Output(f.Node("Gelu", [w], Attr.String("approximate", approximate))), requireDouble: approximate == "tanh"); // Erf has no float64 kernel
    }

    [Theory]
    [InlineData("Equal")]
    [InlineData("ConstantOfShape")]
    [InlineData("Shape")]
    public void Comparison_and_shape_ops_are_non_differentiable(string op) =>
        Assert.True(GradientRuleRegistry.Default.IsNonDifferentiable("", op));
}
