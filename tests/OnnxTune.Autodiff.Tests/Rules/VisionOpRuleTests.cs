using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Training.GradientChecking;
using Xunit.Abstractions;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class VisionOpRuleTests(ITestOutputHelper output)
{
    private static readonly GradientCheckOptions OnlyW = new()
    {
        Selection = new ParameterSelection { Trainable = ["w*"] },
        DimValues = new Dictionary<string, long> { ["batch"] = 3 },
        MaxElementsPerParameter = 60,
    };

    private GradientCheckReport Check(global::Onnx.ModelProto model, bool requireDouble, GradientCheckOptions? options = null)
    {
        var report = GradientAssert.Passes(model, options ?? OnlyW, requireDouble);
        output.WriteLine($"{(report.DoublePrecision ? "float64" : "float32")}: " + string.Join(", ", report.Parameters.Select(p => $"{p.Name} rel {p.MaxRelativeError:E1}")));
        return report;
    }

    [Fact]
    public void Relu6_is_Clip_with_min_and_max_inputs()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [4, 6], -2, 8);
        var y = f.Node("Clip", [w, f.ConstFloat("lo", [0f]), f.ConstFloat("hi", [6f])]);
        Check(f.Output(y), requireDouble: true);
    }

    [Theory]
    [InlineData(0.2f, 0.5f)]
    [InlineData(1f / 6, 0.5f)]
    public void HardSigmoid(float alpha, float beta)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [4, 6], -6, 6);
        Check(f.Output(f.Node("HardSigmoid", [w], Attr.Float("alpha", alpha), Attr.Float("beta", beta))), requireDouble: true);
    }

    [Fact]
    public void HardSwish()
    {
        var f = new ModelFactory(opset: 14);
        var w = f.Param("w", [5, 8], -5, 5);
        Check(f.Output(f.Node("HardSwish", [w])), requireDouble: true);
    }

    [Theory]
    [InlineData(new long[] { 1, 2, 0, 1 }, false)]
    [InlineData(new long[] { 0, 0, 2, 3 }, true)]
    public void Pad_constant(long[] pads, bool withValue)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4]);
        var inputs = withValue ? new[] { w, f.Const("pads", pads), f.ConstFloat("value", [0.5f]) } : [w, f.Const("pads", pads)];
        Check(f.Output(f.Node("Mul", [f.Node("Pad", inputs), f.Node("Pad", inputs)])), requireDouble: true);
    }

    [Fact]
    public void Pad_with_axes_opset18()
    {
        var f = new ModelFactory(opset: 18);
        var w = f.Param("w", [2, 3, 4]);
        Check(f.Output(f.Node("Pad", [w, f.Const("pads", [1, 2, 0, 1]), f.ConstFloat("value", [0f]), f.Const("axes", [2, 0])])), requireDouble: true);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void BatchNormalization_with_given_statistics_all_inputs(int rank)
    {
        // The inference form; mean and var get gradients too (the training graph feeds them batch statistics).
        var f = new ModelFactory();
        long[] dims = rank == 2 ? [3, 4] : [2, 4, 3, 2];
        var x = f.Param("w_x", dims, -2, 2);
        var y = f.Node("BatchNormalization", [x, f.Param("w_scale", [4], 0.5, 1.5), f.Param("w_b", [4]), f.Param("w_mean", [4], -0.5, 0.5), f.Param("w_var", [4], 0.5, 1.5)],
            Attr.Float("epsilon", 1e-3f), Attr.Float("momentum", 0.9f));
        Check(f.Output(y), requireDouble: true);
    }
}
