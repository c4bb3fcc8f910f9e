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

[GradientRule("Elu")]
internal sealed class EluGradient : GradientRule
{
    // y = x > 0 ? x : α(exp(x) - 1): dx = dY for x > 0, else dY (y + α)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var alpha = ctx.ScalarLike(ctx.Node.GetFloat("alpha", 1f), x);
        var positive = ctx.Op("Greater", x, ctx.ScalarLike(0f, x));
        return [ctx.Op("Where", positive, dy, ctx.Op("Mul", dy, ctx.Op("Add", ctx.Output(0), alpha)))];
    }
}

[GradientRule("Selu")]
internal sealed class SeluGradient : GradientRule
{
    // y = γ (x > 0 ? x : α(exp(x) - 1)): dx = γ dY for x > 0, else dY (y + γα)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var alpha = ctx.Node.GetFloat("alpha", 1.67326319217681884765625f);
        var gamma = ctx.Node.GetFloat("gamma", 1.05070102214813232421875f);
        var positive = ctx.Op("Greater", x, ctx.ScalarLike(0f, x));
        var negative = ctx.Op("Mul", dy, ctx.Op("Add", ctx.Output(0), ctx.ScalarLike(alpha * gamma, x)));
        return [ctx.Op("Where", positive, ctx.Op("Mul", dy, ctx.ScalarLike(gamma, x)), negative)];
    }
}

[GradientRule("Celu", SinceVersion = 12)]
internal sealed class CeluGradient : GradientRule
{
    // y = max(0, x) + min(0, α(exp(x/α) - 1)): dx = dY for x > 0, else dY exp(x/α)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var alpha = ctx.Node.GetFloat("alpha", 1f);
        var positive = ctx.Op("Greater", x, ctx.ScalarLike(0f, x));
        var slope = ctx.Op("Exp", ctx.Op("Div", x, ctx.ScalarLike(alpha, x)));
        return [ctx.Op("Where", positive, dy, ctx.Op("Mul", dy, slope))];
    }
}

[GradientRule("ThresholdedRelu", SinceVersion = 10)]
internal sealed class ThresholdedReluGradient : GradientRule
{
    // y = x > α ? x : 0
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var above = ctx.Op("Greater", x, ctx.ScalarLike(ctx.Node.GetFloat("alpha", 1f), x));
        return [ctx.Op("Where", above, ctx.GradOutput(0)!, ctx.ScalarLike(0f, x))];
    }
}

[GradientRule("Softsign")]
internal sealed class SoftsignGradient : GradientRule
{
    // y = x / (1 + |x|): dx = dY / (1 + |x|)^2
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var denominator = ctx.Op("Add", ctx.Op("Abs", x), ctx.ScalarLike(1f, x));
        return [ctx.Op("Div", ctx.GradOutput(0)!, ctx.Op("Mul", denominator, denominator))];
    }
}

[GradientRule("Mish", SinceVersion = 18)]
internal sealed class MishGradient : GradientRule
{
    // y = x tanh(softplus(x)): dx = dY (t + x sigmoid(x) (1 - t^2)), t = tanh(softplus(x))
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var t = ctx.Op("Tanh", ctx.Op("Softplus", x));
        var sech2 = ctx.Op("Sub", ctx.ScalarLike(1f, x), ctx.Op("Mul", t, t));
        var slope = ctx.Op("Add", t, ctx.Op("Mul", ctx.Op("Mul", x, ctx.Op("Sigmoid", x)), sech2));
        return [ctx.Op("Mul", ctx.GradOutput(0)!, slope)];
    }
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
