using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Autodiff.Gradients.Rules;

// Pooling backward with standard ops: MaxPool scatters dY to the argmax positions its Indices output names,
// AveragePool is the transposed window sum of dY divided by each window's divisor, the global pools broadcast.

internal static class PoolingGradients
{
    public static int RankOrThrow(GradientContext ctx, string x) =>
        ctx.RankOf(x) ?? (ctx.Node.GetInts("kernel_shape") is { } k ? k.Length + 2
            : throw new OnnxTuneException($"{ctx.Node.Describe()}: the gradient needs the input's rank."));

    /// <summary>A float constant filled with <paramref name="value"/> of a run-time or static shape.</summary>
    public static string Filled(GradientContext ctx, string shape, float value) =>
        ctx.Op("ConstantOfShape", [shape], Attr.Tensor("value", TensorProtos.Float("fill", [value], 1)));
}

[GradientRule("MaxPool", SinceVersion = 8)]
internal sealed class MaxPoolGradient : GradientRule
{
    // Indices (output 1) are positions in the flattened input (batch and channels included, row-major), so dX is
    // dY scatter-added into a flat zero tensor of x's size. Ties take the first maximum, as ORT and PyTorch do.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (ctx.Node.GetInt("storage_order", 0) != 0)
            throw new OnnxTuneException($"{ctx.Node.Describe()}: the MaxPool gradient needs storage_order 0.");
        ctx.RequireOpset(16);
        var x = ctx.Input(0);
        var indices = ctx.ForwardOutput(1);
        var flatIndices = ctx.Op("Reshape", indices, ctx.Ints(-1));
        var flatDy = ctx.Op("Reshape", ctx.GradOutput(0)!, ctx.Ints(-1));
        var zeros = ctx.ZerosOfShape(ctx.Op("Reshape", ctx.Op("Size", x), ctx.Ints(1)), x);
        var scattered = ctx.Op("ScatterElements", [zeros, flatIndices, flatDy], Attr.Int("axis", 0), Attr.String("reduction", "add"));
        return [ctx.ReshapeLike(scattered, x)];
    }
}

[GradientRule("AveragePool", SinceVersion = 7)]
internal sealed class AveragePoolGradient : GradientRule
{
    // y = S(x) / D with S the window sum over real input elements and D each window's divisor (the kernel size,
    // or with count_include_pad=0 / ceil_mode the count ORT's kernel uses). D is read off the kernel itself:
    // AveragePool(ones) = S(ones) / D. Then dX = S^T(dY / D), S^T the transposed window sum (ConvTranspose, ones).
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var y = ctx.Output(0);
        var kernel = ctx.Node.GetInts("kernel_shape") ?? throw new OnnxTuneException($"{ctx.Node.Describe()}: no kernel_shape.");
        var geo = WindowGeometry.Of(ctx.Node, kernel);
        var k = geo.Spatial;
        var dy = ctx.GradOutput(0)!;
        var ceil = ctx.Node.GetInt("ceil_mode", 0) != 0;
        var includePad = ctx.Node.GetInt("count_include_pad", 0) != 0;
        var pads = geo.StaticPads(ctx.TypeOf(x)?.Dims);
        var trivial = !ceil && (includePad || (pads is not null && pads.All(p => p == 0)));
        string scaled;
        if (trivial)
            scaled = ctx.Op("Mul", dy, ctx.ScalarLike(1f / kernel.Aggregate(1L, (a, b) => a * b), x));
        else
        {
            // Window counts over a [1, 1, spatial] plane of ones (broadcast over batch and channels).
            var planeShape = ctx.Op("Concat", [ctx.Ints(1, 1), geo.SpatialSizes(ctx, x)], Attr.Int("axis", 0));
            var ones = PoolingGradients.Filled(ctx, planeShape, 1f);
            var avgOnes = ctx.Op("AveragePool", [ones], [.. ctx.Node.Attribute]);
            var onesKernel = PoolingGradients.Filled(ctx, ctx.Ints([1, 1, .. kernel]), 1f);
            var padded = ones;
            long[] convPads;
            if (pads is null)
            {
                padded = ctx.Op("Pad", ones, geo.RuntimePads(ctx, x).PadPads);
                convPads = new long[2 * k];
            }
            else convPads = [.. pads];
            for (var i = 0; i < k; i++) convPads[k + i] += geo.Strides[i] - 1; // room for ceil_mode's last window
            var sums = ctx.Op("Conv", [padded, onesKernel], Attr.Ints("kernel_shape", kernel), Attr.Ints("strides", geo.Strides), Attr.Ints("dilations", geo.Dilations), Attr.Ints("pads", convPads));
            var sumsCropped = ctx.Op("Slice", sums, ctx.Ints(new long[k]), ctx.Op("Slice", ctx.ShapeOf(y), ctx.Ints(2), ctx.Ints(2 + k)), ctx.Ints(geo.SpatialAxes));
            // 1 / D = AveragePool(ones) / S(ones); windows without real elements get no gradient.
            var zero = ctx.ScalarLike(0f, x);
            var empty = ctx.Op("Equal", sumsCropped, zero);
            var safe = ctx.Op("Where", empty, ctx.ScalarLike(1f, x), sumsCropped);
            var inverse = ctx.Op("Where", empty, zero, ctx.Op("Div", avgOnes, safe));
            scaled = ctx.Op("Mul", dy, inverse);
        }
        // Every (batch, channel) plane separately: [N·C, 1, O...], one ones kernel.
        var planes = ctx.Op("Reshape", scaled, ctx.Op("Concat", [ctx.Ints(-1, 1), ctx.Op("Slice", ctx.ShapeOf(y), ctx.Ints(2), ctx.Ints(2 + k))], Attr.Int("axis", 0)));
        var kernelOnes = PoolingGradients.Filled(ctx, ctx.Ints([1, 1, .. kernel]), 1f);
        var dx = geo.TransposedWindow(ctx, planes, kernelOnes, 1, x);
        return [ctx.ReshapeLike(dx, x)];
    }
}

[GradientRule("GlobalAveragePool")]
internal sealed class GlobalAveragePoolGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var count = ctx.Op("Cast", [ctx.Op("Div", ctx.Op("Size", x), ctx.Op("Size", ctx.Output(0)))], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
        return [ctx.Op("Expand", ctx.Op("Div", ctx.GradOutput(0)!, count), ctx.ShapeOf(x))];
    }
}

[GradientRule("GlobalMaxPool")]
internal sealed class GlobalMaxPoolGradient : GradientRule
{
    // dY goes to the positions equal to the plane's maximum, shared equally between ties.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var rank = PoolingGradients.RankOrThrow(ctx, x);
        var mask = ctx.Op("Cast", [ctx.Op("Equal", x, ctx.Output(0))], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
        var ties = ctx.ReduceSum(mask, Enumerable.Range(2, rank - 2).Select(i => (long)i).ToArray(), keepDims: true);
        return [ctx.Op("Mul", mask, ctx.Op("Div", ctx.GradOutput(0)!, ties))];
    }
}
