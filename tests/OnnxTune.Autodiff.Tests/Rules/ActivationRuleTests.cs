using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Tests.Rules;

public class ActivationRuleTests
{
    [Theory]
    [InlineData("Sin")]
    [InlineData("Cos")]
    public void Trigonometric(string op)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], -3, 3);
        GradientAssert.Passes(f.Output(f.Node(op, [w])));
    }

    [Theory]
    [InlineData("Elu", "alpha", 1f)]
    [InlineData("Elu", "alpha", 0.5f)]
    [InlineData("Selu", null, 0f)]
    [InlineData("Selu", "alpha", 1.5f)]
    [InlineData("Selu", "gamma", 2f)]
    [InlineData("Celu", null, 0f)]
    [InlineData("Celu", "alpha", 2f)]
    [InlineData("ThresholdedRelu", "alpha", 0.3f)]
    [InlineData("Softsign", null, 0f)]
    [InlineData("Atan", null, 0f)]
    public void Activations_checked_in_float32(string op, string? attribute, float value)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4], -2, 2);
        var y = attribute is null ? f.Node(op, [w]) : f.Node(op, [w], Attr.Float(attribute, value));
        GradientAssert.Passes(f.Output(y), requireDouble: false); // ORT's CPU kernels of these ops are float32 only
    }

    [Fact]
    public void Mish_opset_18()
    {
        var f = new ModelFactory(opset: 18);
        var w = f.Param("w", [3, 4], -3, 3);
        GradientAssert.Passes(f.Output(f.Node("Mish", [w])));
    }
}
