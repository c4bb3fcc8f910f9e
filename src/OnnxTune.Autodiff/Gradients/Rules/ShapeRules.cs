using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

// Ops that only move elements: the gradient moves them back. Shape/axes/split/repeats inputs are integer tensors
// and never get a gradient.

[GradientRule("Transpose")]
internal sealed class TransposeGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var perm = ctx.Node.GetInts("perm");
        if (perm is null)
            return [ctx.Op("Transpose", ctx.GradOutput(0)!)]; // default perm reverses dims: its own inverse
        var inverse = new long[perm.Length];
        for (var i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
        return [ctx.Op("Transpose", [ctx.GradOutput(0)!], Attr.Ints("perm", inverse))];
    }
}

/// <summary>Reshape, Flatten, Squeeze and Unsqueeze keep the element order: reshape dY to the input's shape.</summary>
[GradientRule("Reshape")]
[GradientRule("Flatten")]
[GradientRule("Squeeze")]
[GradientRule("Unsqueeze")]
internal sealed class ReshapeGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var grads = new string?[ctx.InputCount];
        grads[0] = ctx.ReshapeLike(ctx.GradOutput(0)!, ctx.Input(0));
        return grads;
    }
}

[GradientRule("Concat")]
internal sealed class ConcatGradient : GradientRule
{
    // Split dY along the axis into pieces the size of each input (static sizes when known, else read at run time).
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var axis = ctx.Node.GetInt("axis", 0);
        var n = ctx.InputCount;
        if (n == 1) return [ctx.GradOutput(0)];
        var sizes = new long?[n];
        for (var i = 0; i < n; i++)
        {
            var dims = ctx.TypeOf(ctx.Input(i))?.Dims;
            sizes[i] = dims is null ? null : dims[(int)(axis < 0 ? axis + dims.Length : axis)];
        }
        string split;
        if (sizes.All(s => s.HasValue)) split = ctx.Ints(sizes.Select(s => s!.Value).ToArray());
        else
        {
            var parts = Enumerable.Range(0, n)
                .Select(i => sizes[i] is { } s ? ctx.Ints(s) : ctx.Op("Gather", [ctx.ShapeOf(ctx.Input(i)), ctx.Ints(axis)], Attr.Int("axis", 0)))
                .ToArray();
            split = ctx.Op("Concat", parts, Attr.Int("axis", 0));
        }
        var pieces = ctx.OpMulti("Split", [ctx.GradOutput(0)!, split], n, Attr.Int("axis", axis));
        return pieces.Select((p, i) => ctx.IsRequired(i) ? p : null).ToArray();
    }
}

[GradientRule("Split", SinceVersion = 13)]
internal sealed class SplitGradient : GradientRule
{
    // Concatenate the output gradients; outputs nobody differentiates contribute zeros of their shape.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var parts = Enumerable.Range(0, ctx.Node.Output.Count)
            .Select(i => ctx.Output(i).Length == 0
                ? throw new OnnxTuneException($"{ctx.Node.Describe()} has an unnamed output {i}; its gradient needs every piece.")
                : ctx.GradOutputOrZeros(i))
            .ToArray();
        var dx = parts.Length == 1 ? parts[0] : ctx.Op("Concat", parts, Attr.Int("axis", ctx.Node.GetInt("axis", 0)));
        var grads = new string?[ctx.InputCount];
        grads[0] = dx;
        return grads;
    }
}

[GradientRule("Slice", SinceVersion = 10)]
internal sealed class SliceGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var grads = new string?[ctx.InputCount];
        grads[0] = TryPad(ctx) ?? Scatter(ctx);
        return grads;
    }

    // Unit steps, constant starts/ends and known sliced dims: pad dY with zeros back to the input's extent.
    private static string? TryPad(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dims = ctx.TypeOf(x)?.Dims;
        var starts = ctx.ConstantInts(ctx.Input(1));
        var ends = ctx.ConstantInts(ctx.Input(2));
        if (dims is null || starts is null || ends is null || starts.Length != ends.Length) return null;
        var axes = ctx.HasInput(3) ? ctx.ConstantInts(ctx.Input(3)) : Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
        var steps = ctx.HasInput(4) ? ctx.ConstantInts(ctx.Input(4)) : starts.Select(_ => 1L).ToArray();
        if (axes is null || steps is null || steps.Any(s => s != 1)) return null;
        var r = dims.Length;
        var pads = new long[2 * r];
        for (var k = 0; k < axes.Length; k++)
        {
            var ax = (int)(axes[k] < 0 ? axes[k] + r : axes[k]);
            if (dims[ax] is not { } n) return null;
            var s = Math.Clamp(starts[k] < 0 ? starts[k] + n : starts[k], 0, n);
            var e = Math.Clamp(ends[k] < 0 ? ends[k] + n : ends[k], 0, n);
            if (e < s) e = s;
            pads[ax] = s;
            pads[r + ax] = n - e;
        }
        return ctx.Op("Pad", ctx.GradOutput(0)!, ctx.Ints(pads));
    }

    // General case (any step sign, run-time starts/ends): slice a tensor of flat element positions exactly as the
    // forward did, then scatter dY into zeros at those (distinct) positions.
    private static string Scatter(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var count = ctx.Op("Size", x);
        var positions = ctx.Op("Reshape", ctx.Op("Range", ctx.ScalarInt64(0), count, ctx.ScalarInt64(1)), ctx.ShapeOf(x));
        var sliceInputs = new List<string> { positions };
        for (var i = 1; i < ctx.InputCount; i++) sliceInputs.Add(ctx.Input(i));
        var picked = ctx.Op("Slice", sliceInputs.ToArray());
        var indices = ctx.Op("Reshape", picked, ctx.Ints(-1, 1));
        var zeros = ctx.ZerosOfShape(ctx.Op("Reshape", count, ctx.Ints(1)), x);
        var flat = ctx.Op("ScatterND", zeros, indices, ctx.Op("Reshape", ctx.GradOutput(0)!, ctx.Ints(-1)));
        return ctx.ReshapeLike(flat, x);
    }
}

[GradientRule("Expand")]
internal sealed class ExpandGradient : BroadcastingGradientRule
{
    // The walker sums dY back to the input's shape.
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.GradOutput(0), null];
}

[GradientRule("Tile")]
internal sealed class TileGradient : GradientRule
{
    // dY has dims r_i * d_i: view it as [r_0, d_0, r_1, d_1, ...] and sum over the r axes.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var rank = ctx.RankOf(x) ?? throw new OnnxTuneException($"The Tile gradient needs the rank of '{x}' ({ctx.Node.Describe()}); it could not be inferred.");
        if (rank == 0) return [ctx.GradOutput(0), null];
        var both = ctx.Op("Concat", [ctx.Input(1), ctx.ShapeOf(x)], Attr.Int("axis", 0));
        var order = Enumerable.Range(0, rank).SelectMany(i => new long[] { i, rank + i }).ToArray();
        var viewShape = ctx.Op("Gather", [both, ctx.Ints(order)], Attr.Int("axis", 0));
        var view = ctx.Op("Reshape", ctx.GradOutput(0)!, viewShape);
        var repeatAxes = Enumerable.Range(0, rank).Select(i => 2L * i).ToArray();
        return [ctx.ReduceSum(view, repeatAxes, keepDims: false), null];
    }
}
