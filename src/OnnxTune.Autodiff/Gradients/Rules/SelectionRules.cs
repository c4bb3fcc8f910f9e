using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

// Ops that pick values: the gradient goes where the value came from.

[GradientRule("Where", SinceVersion = 9)]
internal sealed class WhereGradient : BroadcastingGradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var c = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var zero = ctx.ScalarLike(0f, ctx.Output(0));
        return [
            null,
            ctx.IsRequired(1) ? ctx.Op("Where", c, dy, zero) : null,
            ctx.IsRequired(2) ? ctx.Op("Where", c, zero, dy) : null,
        ];
    }
}

/// <summary>
/// Elementwise Max/Min over any number of broadcast inputs: every input equal to the result shares dY equally
/// (PyTorch's rule for torch.maximum/minimum ties: each of two tied inputs gets dY / 2).
/// </summary>
[GradientRule("Max")]
[GradientRule("Min")]
internal sealed class MaxMinGradient : BroadcastingGradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var dy = ctx.GradOutput(0)!;
        var n = ctx.InputCount;
        if (n == 1) return [dy];
        var y = ctx.Output(0);
        var type = (long)ctx.ElementTypeOf(y);
        var hits = Enumerable.Range(0, n).Select(i => ctx.Op("Cast", [ctx.Op("Equal", ctx.Input(i), y)], Attr.Int("to", type))).ToArray();
        var count = ctx.Op("Sum", hits);
        var share = ctx.Op("Div", dy, count);
        return hits.Select((h, i) => ctx.IsRequired(i) ? ctx.Op("Mul", share, h) : null).ToArray();
    }
}

[GradientRule("Clip", SinceVersion = 11)]
internal sealed class ClipGradient : GradientRule
{
    // y = min(max(x, lo), hi): dx = dY where lo <= x <= hi (PyTorch's clamp). A bound that is a trainable tensor
    // gets dY where it was the value taken (x < lo, or x > hi), summed to its scalar shape; this assumes lo <= hi.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var zero = ctx.ScalarLike(0f, x);
        string? inside = null;
        string? below = ctx.HasInput(1) ? ctx.Op("Less", x, ctx.Input(1)) : null;
        string? above = ctx.HasInput(2) ? ctx.Op("Greater", x, ctx.Input(2)) : null;
        if (below is not null) inside = ctx.Op("Not", below);
        if (above is not null)
        {
            var notAbove = ctx.Op("Not", above);
            inside = inside is null ? notAbove : ctx.Op("And", inside, notAbove);
        }
        var grads = new string?[ctx.InputCount];
        if (ctx.IsRequired(0)) grads[0] = inside is null ? dy : ctx.Op("Where", inside, dy, zero);
        if (ctx.IsRequired(1) && below is not null)
            grads[1] = ctx.Op("ReduceSum", [ctx.Op("Where", below, dy, zero)], Attr.Int("keepdims", 0));
        if (ctx.IsRequired(2) && above is not null)
            grads[2] = ctx.Op("ReduceSum", [ctx.Op("Where", above, dy, zero)], Attr.Int("keepdims", 0));
        return grads;
    }
}

[GradientRule("Mean")]
internal sealed class MeanGradient : BroadcastingGradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var share = ctx.Op("Div", ctx.GradOutput(0)!, ctx.ScalarLike(ctx.InputCount, ctx.Output(0)));
        return Enumerable.Range(0, ctx.InputCount).Select(i => ctx.IsRequired(i) ? share : null).ToArray();
    }
}
