using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

/// <summary>Shared backward of reductions: bring dy back to the reduced tensor's rank, then broadcast.</summary>
internal static class ReductionGradients
{
    /// <summary>Axes of a reduce node: attribute (before opset 18, or ReduceSum before 13) or constant input 1.</summary>
    public static long[]? Axes(GradientContext ctx, out bool dynamicAxes)
    {
        dynamicAxes = false;
        if (ctx.Node.GetInts("axes") is { } attr) return attr;
        if (ctx.HasInput(1))
        {
            if (ctx.ConstantInts(ctx.Input(1)) is { } c) return c;
            dynamicAxes = true;
        }
        return null;
    }

    /// <summary>dy expanded to the input's shape (all reductions share this).</summary>
    public static string ExpandToInput(GradientContext ctx, string dy)
    {
        var keepDims = ctx.Node.GetInt("keepdims", 1) != 0;
        var axes = Axes(ctx, out var dynamicAxes);
        var noop = ctx.Node.GetInt("noop_with_empty_axes", 0) != 0;
        if (axes is { Length: 0 } && noop) return dy;
        if (!keepDims && axes is { Length: > 0 })
            dy = ctx.Op("Unsqueeze", dy, ctx.Ints(axes));
        else if (!keepDims && dynamicAxes)
            dy = ctx.Op("Unsqueeze", dy, ctx.Input(1));
        // keepdims=0 over all axes gives a scalar, which Expand broadcasts as is.
        return ctx.Op("Expand", dy, ctx.ShapeOf(ctx.Input(0)));
    }

    /// <summary>Sums <paramref name="t"/> (shaped like the input) over the node's axes, keeping them as size 1.</summary>
    public static string SumKeepDims(GradientContext ctx, string t)
    {
        var axes = Axes(ctx, out var dynamicAxes);
        if (axes is { Length: 0 } && ctx.Node.GetInt("noop_with_empty_axes", 0) != 0) return t;
        if (dynamicAxes)
            return ctx.Op("ReduceSum", [t, ctx.Input(1)], Attr.Int("keepdims", 1), Attr.Int("noop_with_empty_axes", ctx.Node.GetInt("noop_with_empty_axes", 0)));
        return axes is { Length: > 0 } ? ctx.ReduceSum(t, axes, keepDims: true) : ctx.Op("ReduceSum", [t], Attr.Int("keepdims", 1));
    }

    /// <summary>The node's own reduction of <paramref name="t"/> with keepdims=1, in the node's form of axes (attribute or input).</summary>
    public static string ReduceLikeNode(GradientContext ctx, string t)
    {
        var attributes = ctx.Node.Attribute.Where(a => a.Name != "keepdims").Append(Attr.Int("keepdims", 1)).ToArray();
        return ctx.Op(ctx.Node.OpType, ctx.HasInput(1) ? [t, ctx.Input(1)] : [t], attributes);
    }
}

[GradientRule("ReduceSum")]
internal sealed class ReduceSumGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) =>
        [ReductionGradients.ExpandToInput(ctx, ctx.GradOutput(0)!), null];
}

[GradientRule("ReduceMean")]
internal sealed class ReduceMeanGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        // count = size(x) / size(y), as the input's element type
        var count = ctx.Op("Div", ctx.Op("Size", x), ctx.Op("Size", ctx.Output(0)));
        var countF = ctx.Op("Cast", [count], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
        var dy = ctx.Op("Div", ctx.GradOutput(0)!, countF);
        return [ReductionGradients.ExpandToInput(ctx, dy), null];
    }
}

/// <summary>
/// ReduceMax/ReduceMin: dY goes to the positions equal to the result, split equally among ties (PyTorch's amax/amin).
/// </summary>
[GradientRule("ReduceMax")]
[GradientRule("ReduceMin")]
internal sealed class ReduceMaxMinGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var hit = ctx.Op("Cast", [ctx.Op("Equal", x, ReductionGradients.ExpandToInput(ctx, ctx.Output(0)))], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
        var share = ctx.Op("Div", ReductionGradients.ExpandToInput(ctx, dy), ReductionGradients.SumKeepDims(ctx, hit));
        return [ctx.Op("Mul", share, hit), null];
    }
}

[GradientRule("ReduceSumSquare")]
internal sealed class ReduceSumSquareGradient : GradientRule
{
    // dx = 2 x dY
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        return [ctx.Op("Mul", ReductionGradients.ExpandToInput(ctx, dy), ctx.Op("Mul", x, ctx.ScalarLike(2f, x))), null];
    }
}

[GradientRule("ReduceL1")]
internal sealed class ReduceL1Gradient : GradientRule
{
    // dx = sign(x) dY
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        return [ctx.Op("Mul", ReductionGradients.ExpandToInput(ctx, dy), ctx.Op("Sign", x)), null];
    }
}

[GradientRule("ReduceL2")]
internal sealed class ReduceL2Gradient : GradientRule
{
    // dx = x dY / y, and 0 where y = 0 (PyTorch's norm backward).
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var y = ctx.Output(0);
        var zero = ctx.ScalarLike(0f, x);
        var scale = ctx.Op("Where", ctx.Op("Equal", y, zero), zero, ctx.Op("Div", dy, y));
        return [ctx.Op("Mul", x, ReductionGradients.ExpandToInput(ctx, scale)), null];
    }
}

[GradientRule("ReduceLogSumExp")]
internal sealed class ReduceLogSumExpGradient : GradientRule
{
    // dx = exp(x - y) dY (the softmax of x over the axes)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var softmax = ctx.Op("Exp", ctx.Op("Sub", x, ReductionGradients.ExpandToInput(ctx, ctx.Output(0))));
        return [ctx.Op("Mul", ReductionGradients.ExpandToInput(ctx, dy), softmax), null];
    }
}

[GradientRule("ReduceLogSum")]
internal sealed class ReduceLogSumGradient : GradientRule
{
    // y = log(sum x): dx = dY / sum(x) = dY exp(-y)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var dy = ctx.GradOutput(0)!;
        return [ReductionGradients.ExpandToInput(ctx, ctx.Op("Mul", dy, ctx.Op("Exp", ctx.Op("Neg", ctx.Output(0))))), null];
    }
}

/// <summary>
/// ReduceProd: dx_i = dY · (product of the other elements of its slice), exact with zeros as PyTorch's prod backward:
/// y / x where the slice has no zero; where it has one, the zero gets the product of the rest and the others 0;
/// with two or more, all 0.
/// </summary>
[GradientRule("ReduceProd")]
internal sealed class ReduceProdGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var zero = ctx.ScalarLike(0f, x);
        var one = ctx.ScalarLike(1f, x);
        var isZero = ctx.Op("Equal", x, zero);
        var zeros = ReductionGradients.SumKeepDims(ctx, ctx.Op("Cast", [isZero], Attr.Int("to", (long)ctx.ElementTypeOf(x))));
        var nonZero = ctx.Op("Where", isZero, one, x);
        var nonZeroProduct = ReductionGradients.ReduceLikeNode(ctx, nonZero);
        var others = ctx.Op("Where", ctx.Op("Equal", zeros, zero), ctx.Op("Div", nonZeroProduct, nonZero),
            ctx.Op("Where", ctx.Op("And", isZero, ctx.Op("Equal", zeros, one)), nonZeroProduct, zero));
        return [ctx.Op("Mul", ReductionGradients.ExpandToInput(ctx, dy), others), null];
    }
}
