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
