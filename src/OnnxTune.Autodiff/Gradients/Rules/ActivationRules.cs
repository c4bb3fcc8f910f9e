using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

// Activations, written with standard ops only (ORT's ReluGrad/SigmoidGrad kernels exist only in training builds).

[GradientRule("Relu")]
internal sealed class ReluGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var positive = ctx.Op("Greater", x, ctx.ScalarLike(0f, x));
        return [ctx.Op("Where", positive, ctx.GradOutput(0)!, ctx.ScalarLike(0f, x))];
    }
}

[GradientRule("LeakyRelu")]
internal sealed class LeakyReluGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var alpha = ctx.Node.GetFloat("alpha", 0.01f);
        var positive = ctx.Op("Greater", x, ctx.ScalarLike(0f, x));
        return [ctx.Op("Where", positive, dy, ctx.Op("Mul", dy, ctx.ScalarLike(alpha, x)))];
    }
}

[GradientRule("PRelu")]
internal sealed class PReluGradient : BroadcastingGradientRule
{
    // y = x > 0 ? x : slope * x
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var slope = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        var zero = ctx.ScalarLike(0f, x);
        var positive = ctx.Op("Greater", x, zero);
        return [
            ctx.IsRequired(0) ? ctx.Op("Where", positive, dy, ctx.Op("Mul", dy, slope)) : null,
            ctx.IsRequired(1) ? ctx.Op("Where", positive, zero, ctx.Op("Mul", dy, x)) : null,
        ];
    }
}

[GradientRule("Sigmoid")]
internal sealed class SigmoidGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var y = ctx.Output(0);
        var oneMinusY = ctx.Op("Sub", ctx.ScalarLike(1f, y), y);
        return [ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Op("Mul", y, oneMinusY))];
    }
}

[GradientRule("Tanh")]
internal sealed class TanhGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var y = ctx.Output(0);
        var oneMinusY2 = ctx.Op("Sub", ctx.ScalarLike(1f, y), ctx.Op("Mul", y, y));
        return [ctx.Op("Mul", ctx.GradOutput(0)!, oneMinusY2)];
    }
}

[GradientRule("Softplus")]
internal sealed class SoftplusGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        [ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Op("Sigmoid", ctx.Input(0)))];
}

[GradientRule("Softmax", SinceVersion = 13)]
internal sealed class SoftmaxGradient : GradientRule
{
    // dx = y * (dy - sum(dy * y, axis))
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var y = ctx.Output(0);
        var dy = ctx.GradOutput(0)!;
        var axis = ctx.Node.GetInt("axis", -1);
        var dot = ctx.ReduceSum(ctx.Op("Mul", dy, y), [axis], keepDims: true);
        return [ctx.Op("Mul", y, ctx.Op("Sub", dy, dot))];
    }
}

[GradientRule("LogSoftmax", SinceVersion = 13)]
internal sealed class LogSoftmaxGradient : GradientRule
{
    // dx = dy - exp(y) * sum(dy, axis)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var y = ctx.Output(0);
        var dy = ctx.GradOutput(0)!;
        var axis = ctx.Node.GetInt("axis", -1);
        var total = ctx.ReduceSum(dy, [axis], keepDims: true);
        return [ctx.Op("Sub", dy, ctx.Op("Mul", ctx.Op("Exp", y), total))];
    }
}
