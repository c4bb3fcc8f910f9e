using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

// Arithmetic with implicit broadcasting: the walker reduces each returned gradient to its input's shape.

[GradientRule("Add")]
internal sealed class AddGradient : BroadcastingGradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.GradOutput(0), ctx.GradOutput(0)];
}

[GradientRule("Sub")]
internal sealed class SubGradient : BroadcastingGradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        [ctx.GradOutput(0), ctx.IsRequired(1) ? ctx.Op("Neg", ctx.GradOutput(0)!) : null];
}

[GradientRule("Mul")]
internal sealed class MulGradient : BroadcastingGradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var dy = ctx.GradOutput(0)!;
        return [
            ctx.IsRequired(0) ? ctx.Op("Mul", dy, ctx.Input(1)) : null,
            ctx.IsRequired(1) ? ctx.Op("Mul", dy, ctx.Input(0)) : null,
        ];
    }
}

[GradientRule("Div")]
internal sealed class DivGradient : BroadcastingGradientRule
{
    // y = a / b: da = dy / b; db = -dy * y / b
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var dy = ctx.GradOutput(0)!;
        var da = ctx.IsRequired(0) || ctx.IsRequired(1) ? ctx.Op("Div", dy, ctx.Input(1)) : null;
        return [
            ctx.IsRequired(0) ? da : null,
            ctx.IsRequired(1) ? ctx.Op("Neg", ctx.Op("Mul", da!, ctx.Output(0))) : null,
        ];
    }
}

[GradientRule("Pow")]
internal sealed class PowGradient : BroadcastingGradientRule
{
    // y = x^e: dx = dy * e * x^(e-1). The exponent is treated as a constant (no gradient).
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (!ctx.IsRequired(0)) return [null, null];
        var x = ctx.Input(0);
        var e = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        // A constant scalar exponent (LayerNorm's x², a square root) gets a closed form: ONNX Runtime's CPU Pow
        // special-cases only the exponents 2 and 3 and runs std::pow per element otherwise, so x^(e-1) for e = 2
        // would be the slowest element-wise pass of an exported BERT layer's backward.
        if (ctx.ConstantFloats(e) is [var c] && ctx.ElementTypeOf(x) == global::Onnx.TensorProto.Types.DataType.Float)
        {
            return [c switch
            {
                1f => dy,
                2f => ctx.Op("Mul", dy, ctx.Op("Mul", x, ctx.ScalarLike(2f, x))),
                0.5f => ctx.Op("Div", ctx.Op("Mul", dy, ctx.ScalarLike(0.5f, x)), ctx.Output(0)),
                _ => ctx.Op("Mul", dy, ctx.Op("Mul", ctx.Op("Pow", x, ctx.ScalarLike(c - 1f, x)), ctx.ScalarLike(c, x))),
            }, null];
        }
        var eMinusOne = ctx.Op("Sub", e, ctx.ScalarLike(1f, e));
        var dx = ctx.Op("Mul", dy, ctx.Op("Mul", e, ctx.Op("Pow", x, eMinusOne)));
        return [dx, null];
    }
}

[GradientRule("Sum")]
internal sealed class SumGradient : BroadcastingGradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        Enumerable.Repeat(ctx.GradOutput(0), ctx.InputCount).ToArray();
}

[GradientRule("Neg")]
internal sealed class NegGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.Op("Neg", ctx.GradOutput(0)!)];
}

[GradientRule("Identity")]
internal sealed class IdentityGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.GradOutput(0)];
}

[GradientRule("Abs")]
internal sealed class AbsGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        [ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Op("Sign", ctx.Input(0)))];
}

[GradientRule("Exp")]
internal sealed class ExpGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Output(0))];
}

[GradientRule("Log")]
internal sealed class LogGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.Op("Div", ctx.GradOutput(0)!, ctx.Input(0))];
}

[GradientRule("Sqrt")]
internal sealed class SqrtGradient : GradientRule
{
    // y = sqrt(x): dx = dy * 0.5 / y
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        [ctx.Op("Div", ctx.Op("Mul", ctx.GradOutput(0)!, ctx.ScalarLike(0.5f, ctx.Output(0))), ctx.Output(0))];
}

[GradientRule("Reciprocal")]
internal sealed class ReciprocalGradient : GradientRule
{
    // y = 1/x: dx = -dy * y^2
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        [ctx.Op("Neg", ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Op("Mul", ctx.Output(0), ctx.Output(0))))];
}

[GradientRule("Sin")]
internal sealed class SinGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Op("Cos", ctx.Input(0)))];
}

[GradientRule("Cos")]
internal sealed class CosGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        [ctx.Op("Neg", ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Op("Sin", ctx.Input(0))))];
}

[GradientRule("Atan")]
internal sealed class AtanGradient : GradientRule
{
    // dx = dY / (1 + x^2)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        return [ctx.Op("Div", ctx.GradOutput(0)!, ctx.Op("Add", ctx.Op("Mul", x, x), ctx.ScalarLike(1f, x)))];
    }
}
