using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

// Piecewise-linear activations of mobile CNNs (MobileNetV3, EfficientNet-lite). ReLU6 is Clip(x, 0, 6): ClipGradient.

[GradientRule("HardSigmoid")]
internal sealed class HardSigmoidGradient : GradientRule
{
    // y = max(0, min(1, αx + β)): dx = α·dY where 0 < αx + β < 1 (PyTorch's hardsigmoid backward: open interval).
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var alpha = ctx.Node.GetFloat("alpha", 0.2f);
        var beta = ctx.Node.GetFloat("beta", 0.5f);
        var t = ctx.Op("Add", ctx.Op("Mul", x, ctx.ScalarLike(alpha, x)), ctx.ScalarLike(beta, x));
        var inside = ctx.Op("And", ctx.Op("Greater", t, ctx.ScalarLike(0f, x)), ctx.Op("Less", t, ctx.ScalarLike(1f, x)));
        return [ctx.Op("Where", inside, ctx.Op("Mul", ctx.GradOutput(0)!, ctx.ScalarLike(alpha, x)), ctx.ScalarLike(0f, x))];
    }
}

[GradientRule("HardSwish", SinceVersion = 14)]
internal sealed class HardSwishGradient : GradientRule
{
    // y = x · max(0, min(1, x/6 + 1/2)): dy/dx = 0 for x < -3, x/3 + 1/2 for -3 <= x <= 3, 1 above (PyTorch's rule).
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var slope = ctx.Op("Add", ctx.Op("Div", x, ctx.ScalarLike(3f, x)), ctx.ScalarLike(0.5f, x));
        var middle = ctx.Op("Where", ctx.Op("Greater", x, ctx.ScalarLike(3f, x)), dy, ctx.Op("Mul", dy, slope));
        return [ctx.Op("Where", ctx.Op("Less", x, ctx.ScalarLike(-3f, x)), ctx.ScalarLike(0f, x), middle)];
    }
}
