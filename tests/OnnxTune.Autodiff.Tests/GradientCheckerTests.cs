using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests;

/// <summary>
/// The checker itself (issue 13): narrower finite-difference steps near kinks, the batch size it picks for
/// BatchNormalization layers, and that a wrong gradient still fails.
/// </summary>
public sealed class GradientCheckerTests
{
    private static readonly ParameterSelection OnlyW = new() { Trainable = ["w*"] };

    [Fact]
    public void A_parameter_within_the_first_step_of_a_kink_passes_with_narrower_steps()
    {
        // Clip(w, 0, 6) with elements 1e-7 above 0 and 4.8e-7 below 6 (float32's nearest): a central difference with
        // h = 1e-6·max(1, |w|) straddles the bound (it gives about half the slope), h/100 does not.
        var f = new ModelFactory();
        f.ConstFloat("w", [1e-7f, 6f - 3e-7f, 3f, -2f, 7f], 5);
        var y = f.Node("Clip", ["w", f.ConstFloat("lo", [0f]), f.ConstFloat("hi", [6f])]);
        var report = GradientAssert.Passes(f.Output(y), new GradientCheckOptions { Selection = OnlyW });
        Assert.Equal(5, report.Parameters.Single().ElementsChecked);
    }

    [Theory]
    [InlineData(1e-3)]
    [InlineData(1e-4)]
    public void A_wrong_gradient_fails_at_every_step(double error)
    {
        // Tanh's rule scaled by 1 + error: the finite differences converge to the true derivative at every step size.
        var f = new ModelFactory();
        var y = f.Node("Tanh", [f.Param("w", [6], -1.5, 1.5)]);
        var model = f.Output(y);
        var registry = new GradientRuleRegistry();
        foreach (var op in new[] { "Mul", "ReduceSum" })
            registry.Register(op, GradientRuleRegistry.Default.Find("", op, 17)!);
        registry.Register("Tanh", new ScaledRule(GradientRuleRegistry.Default.Find("", "Tanh", 17)!, 1 + error));
        var report = GradientChecker.Check(model, new GradientCheckOptions { Selection = OnlyW, Registry = registry });
        Assert.True(report.DoublePrecision);
        var w = report.Parameters.Single();
        Assert.False(w.Passed, $"max rel {w.MaxRelativeError:E2}");
        Assert.InRange(w.MaxRelativeError, error / 2, error * 2);
        // The same model with the right rule passes.
        GradientAssert.Passes(model, new GradientCheckOptions { Selection = OnlyW });
    }

    private static ModelFactory BatchNormAfterConv(long spatial, out string y)
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 3L, spatial, spatial);
        var c = f.Node("Conv", [x, f.Param("w_conv", [4, 3, 1, 1])]);
        var bn = f.Node("BatchNormalization", [c, f.Param("w_scale", [4], 0.5, 1.5), f.Param("w_b", [4]), f.Param("running_mean", [4], -0.5, 0.5), f.Param("running_var", [4], 0.5, 1.5)]);
        y = f.Node("Mul", [bn, f.Node("Tanh", [bn])]);
        return f;
    }

    [Theory]
    [InlineData(1, 8)]   // 1x1 spatial: 8 samples for 8 values per channel
    [InlineData(2, 2)]   // 2x2: the default 2 samples already give 8
    [InlineData(3, 2)]
    public void The_batch_grows_until_every_batch_statistics_layer_normalises_enough_values(long spatial, long batch)
    {
        var f = BatchNormAfterConv(spatial, out var y);
        var report = GradientAssert.Passes(f.Output(y), new GradientCheckOptions { Selection = OnlyW });
        Assert.Equal(batch, report.DimValues["batch"]);
    }

    [Fact]
    public void A_given_batch_size_or_running_statistics_keep_the_batch_as_asked()
    {
        var model = BatchNormAfterConv(1, out var y).Output(y);
        Assert.Equal(3, GradientAssert.Passes(model, new GradientCheckOptions { Selection = OnlyW, DimValues = new Dictionary<string, long> { ["batch"] = 3 } }).DimValues["batch"]);
        Assert.Equal(2, GradientAssert.Passes(model, new GradientCheckOptions { Selection = OnlyW, BatchNorm = BatchNormMode.None }).DimValues["batch"]);
        Assert.Equal(2, GradientAssert.Passes(model, new GradientCheckOptions { Selection = OnlyW, MinBatchNormValuesPerChannel = 1 }).DimValues["batch"]);
        // BN frozen (scale and bias not checked): it keeps its running statistics, so nothing to raise.
        Assert.Equal(2, GradientAssert.Passes(model, new GradientCheckOptions { Selection = new ParameterSelection { Trainable = ["w_conv"] } }).DimValues["batch"]);
    }

    /// <summary>A rule whose input gradients are another rule's times a constant.</summary>
    private sealed class ScaledRule(IGradientRule inner, double factor) : IGradientRule
    {
        public bool Broadcasts => inner.Broadcasts;

        public IReadOnlyList<string?> Build(GradientContext ctx) =>
            inner.Build(ctx).Select((g, i) => g is null ? null : ctx.Op("Mul", g, ctx.ScalarLike((float)factor, ctx.Input(i)))).ToList();
    }
}
