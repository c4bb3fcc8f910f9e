using Onnx;
using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

/// <summary>
/// Window geometry shared by Conv and the pooling ops: kernel, strides, dilations and the padding of every spatial
/// axis, static when the attributes (or, for <c>auto_pad</c> SAME_*, the input's spatial sizes) fix it.
/// </summary>
internal sealed class WindowGeometry
{
    public required int Spatial { get; init; }
    public required long[] Kernel { get; init; }
    public required long[] Strides { get; init; }
    public required long[] Dilations { get; init; }
    public required string AutoPad { get; init; }
    public required long[]? ExplicitPads { get; init; }

    public static WindowGeometry Of(NodeProto node, long[] kernel)
    {
        var k = kernel.Length;
        long[] Or(string name, long v) => node.GetInts(name) is { Length: > 0 } a ? a : Enumerable.Repeat(v, k).ToArray();
        var autoPad = node.GetString("auto_pad", "NOTSET");
        return new WindowGeometry
        {
            Spatial = k,
            Kernel = kernel,
            Strides = Or("strides", 1),
            Dilations = Or("dilations", 1),
            AutoPad = autoPad,
            ExplicitPads = autoPad is "NOTSET" or "" ? Or("pads", 0) is { } p && p.Length == 2 * k ? p : new long[2 * k] : null,
        };
    }

    public bool IsSame => AutoPad is "SAME_UPPER" or "SAME_LOWER";

    /// <summary>Pads as [b1..bk, e1..ek] when known statically (explicit, VALID, or SAME with known spatial sizes).</summary>
    public long[]? StaticPads(long?[]? inputDims)
    {
        if (AutoPad == "VALID") return new long[2 * Spatial];
        if (!IsSame) return ExplicitPads;
        if (inputDims is null || inputDims.Length != Spatial + 2) return null;
        var pads = new long[2 * Spatial];
        for (var i = 0; i < Spatial; i++)
        {
            if (inputDims[i + 2] is not { } l) return null;
            var o = (l + Strides[i] - 1) / Strides[i];
            var total = Math.Max(0, (o - 1) * Strides[i] + Dilations[i] * (Kernel[i] - 1) + 1 - l);
            var small = total / 2;
            pads[i] = AutoPad == "SAME_UPPER" ? small : total - small;
            pads[i + Spatial] = total - pads[i];
        }
        return pads;
    }

    /// <summary>SAME pads computed at run time: returns (begin [k], Pad-op pads [2·(k+2)]) as int64 tensors.</summary>
    public (string Begin, string PadPads) RuntimePads(GradientContext ctx, string x)
    {
        var k = Spatial;
        var spatial = ctx.Op("Slice", ctx.ShapeOf(x), ctx.Ints(2), ctx.Ints(2 + k));
        var s = ctx.Ints(Strides);
        var o = ctx.Op("Div", ctx.Op("Sub", ctx.Op("Add", spatial, s), ctx.Ints(Enumerable.Repeat(1L, k).ToArray())), s);
        var reach = ctx.Ints(Enumerable.Range(0, k).Select(i => Dilations[i] * (Kernel[i] - 1) + 1).ToArray());
        var total = ctx.Op("Max", ctx.Op("Sub", ctx.Op("Add", ctx.Op("Mul", ctx.Op("Sub", o, ctx.Ints(Enumerable.Repeat(1L, k).ToArray())), s), reach), spatial),
            ctx.Ints(new long[k]));
        var small = ctx.Op("Div", total, ctx.Ints(Enumerable.Repeat(2L, k).ToArray()));
        var begin = AutoPad == "SAME_UPPER" ? small : ctx.Op("Sub", total, small);
        var end = ctx.Op("Sub", total, begin);
        var padPads = ctx.Op("Concat", [ctx.Ints(0, 0), begin, ctx.Ints(0, 0), end], Attr.Int("axis", 0));
        return (begin, padPads);
    }

    /// <summary>Spatial sizes of <paramref name="x"/> (int64 [k]), static when known.</summary>
    public string SpatialSizes(GradientContext ctx, string x)
    {
        var dims = ctx.TypeOf(x)?.Dims;
        if (dims is { } d && d.Length == Spatial + 2 && d.Skip(2).All(v => v.HasValue))
            return ctx.Ints(d.Skip(2).Select(v => v!.Value).ToArray());
        return ctx.Op("Slice", ctx.ShapeOf(x), ctx.Ints(2), ctx.Ints(2 + Spatial));
    }

    public long[] SpatialAxes => Enumerable.Range(2, Spatial).Select(i => (long)i).ToArray();

    /// <summary>
    /// The adjoint of a strided window sum: ConvTranspose of <paramref name="dy"/> with <paramref name="w"/>, cropped
    /// (or zero-extended) to <paramref name="x"/>'s spatial extent. Rows no window reached get zero.
    /// </summary>
    public string TransposedWindow(GradientContext ctx, string dy, string w, long group, string x, string? padsHint = null)
    {
        var k = Spatial;
        var pads = StaticPads(ctx.TypeOf(x)?.Dims);
        var attrs = new List<AttributeProto>
        {
            Attr.Ints("kernel_shape", Kernel), Attr.Ints("strides", Strides), Attr.Ints("dilations", Dilations), Attr.Int("group", group),
        };
        if (pads is not null && Strides.All(v => v == 1))
        {
            // Stride 1: the transposed output has exactly the input's extent.
            attrs.Add(Attr.Ints("pads", pads));
            return ctx.Op("ConvTranspose", [dy, w], [.. attrs]);
        }
        // Output as long as the padded input or longer (output_padding = stride - 1), then cropped to the input.
        var begin = pads?.Take(k).ToArray();
        attrs.Add(Attr.Ints("pads", [.. begin ?? new long[k], .. new long[k]]));
        attrs.Add(Attr.Ints("output_padding", Strides.Select(v => v - 1).ToArray()));
        var full = ctx.Op("ConvTranspose", [dy, w], [.. attrs]);
        var sizes = SpatialSizes(ctx, x);
        if (begin is not null)
            return ctx.Op("Slice", full, ctx.Ints(new long[k]), sizes, ctx.Ints(SpatialAxes));
        var (rb, _) = RuntimePads(ctx, x);
        return ctx.Op("Slice", full, rb, ctx.Op("Add", rb, sizes), ctx.Ints(SpatialAxes));
    }
}

[GradientRule("Conv")]
internal sealed class ConvGradient : GradientRule
{
    // y[n, g·Mg+m, o] = Σ_c Σ_k W[g·Mg+m, c, k] · xpad[n, g·Cg+c, o·s + k·d] (+ B)
    //   dX = ConvTranspose(dY, W) with the same strides/dilations/group, cropped to x (ORT's ConvGrad, standard ops)
    //   dW = Conv over transposed tensors: x as [Cg, G·N, S] (channels as batch), dY as [M, N, O] (the kernel),
    //        strides and dilations swapped, group G; cropped to the kernel extent
    //   dB = Σ dY over batch and spatial axes
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var w = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        var wDims = ctx.TypeOf(w)?.Dims;
        if (wDims is null || wDims.Length < 3 || wDims.Any(d => d is null))
            throw new OnnxTuneException($"{ctx.Node.Describe()}: the Conv gradient needs the weight's static shape.");
        var m = wDims[0]!.Value;
        var cg = wDims[1]!.Value;
        var kernel = wDims.Skip(2).Select(d => d!.Value).ToArray();
        var geo = WindowGeometry.Of(ctx.Node, kernel);
        var k = geo.Spatial;
        var group = ctx.Node.GetInt("group", 1);
        var grads = new string?[ctx.InputCount];

        if (ctx.IsRequired(0)) grads[0] = geo.TransposedWindow(ctx, dy, w, group, x);

        if (ctx.IsRequired(1))
        {
            var pads = geo.StaticPads(ctx.TypeOf(x)?.Dims);
            var xin = x;
            if (pads is null)
            {
                var (_, padPads) = geo.RuntimePads(ctx, x);
                xin = ctx.Op("Pad", x, padPads);
                pads = new long[2 * k];
            }
            // The kernel of the weight-gradient Conv is dY: its size is the forward output's (stated when static).
            long[]? outSpatial = ctx.TypeOf(x)?.Dims is { } xd && xd.Length == k + 2 && xd.Skip(2).All(v => v.HasValue) && xin == x
                ? Enumerable.Range(0, k).Select(i => (xd[i + 2]!.Value + pads[i] + pads[i + k] - geo.Dilations[i] * (kernel[i] - 1) - 1) / geo.Strides[i] + 1).ToArray()
                : null;
            grads[1] = WeightGradient(ctx, xin, dy, m, cg, kernel, geo, pads, group, outSpatial);
        }

        if (ctx.HasInput(2) && ctx.IsRequired(2))
            grads[2] = ctx.ReduceSum(dy, [0, .. geo.SpatialAxes], keepDims: false);
        return grads;
    }

    /// <summary>
    /// dW of y = Conv(x, W) (W: [M, Cg, K]) from the (padded) input <paramref name="xin"/> and dY: a Conv over
    /// transposed tensors (x as [Cg, G·N, S], dY as the kernel [M, N, O]) with strides and dilations swapped,
    /// cropped to K. <paramref name="dySpatial"/>: dY's static spatial sizes (the kernel_shape attribute), if known.
    /// </summary>
    internal static string WeightGradient(GradientContext ctx, string xin, string dy, long m, long cg, long[] kernel, WindowGeometry geo, long[] pads, long group, long[]? dySpatial)
    {
        var k = kernel.Length;
        var spatialPerm = Enumerable.Range(2, k).Select(i => (long)i).ToArray();
        string xT, dyT;
        if (group == 1)
        {
            xT = ctx.Op("Transpose", [xin], Attr.Ints("perm", [1, 0, .. spatialPerm]));
            dyT = ctx.Op("Transpose", [dy], Attr.Ints("perm", [1, 0, .. spatialPerm]));
        }
        else
        {
            var mg = m / group;
            var xShape = ctx.ShapeOf(xin);
            var xSpatial = ctx.Op("Slice", xShape, ctx.Ints(2), ctx.Ints(2 + k));
            var x5 = ctx.Op("Reshape", xin, ctx.Op("Concat", [ctx.Op("Slice", xShape, ctx.Ints(0), ctx.Ints(1)), ctx.Ints(group, cg), xSpatial], Attr.Int("axis", 0)));
            var x5T = ctx.Op("Transpose", [x5], Attr.Ints("perm", [2, 1, 0, .. spatialPerm.Select(a => a + 1)]));
            xT = ctx.Op("Reshape", x5T, ctx.Op("Concat", [ctx.Ints(cg, -1), xSpatial], Attr.Int("axis", 0)));
            var yShape = ctx.ShapeOf(dy);
            var ySpatial = ctx.Op("Slice", yShape, ctx.Ints(2), ctx.Ints(2 + k));
            var y5 = ctx.Op("Reshape", dy, ctx.Op("Concat", [ctx.Op("Slice", yShape, ctx.Ints(0), ctx.Ints(1)), ctx.Ints(group, mg), ySpatial], Attr.Int("axis", 0)));
            var y5T = ctx.Op("Transpose", [y5], Attr.Ints("perm", [1, 2, 0, .. spatialPerm.Select(a => a + 1)]));
            dyT = ctx.Op("Reshape", y5T, ctx.Op("Concat", [ctx.Ints(m, -1), ySpatial], Attr.Int("axis", 0)));
        }
        var convAttrs = new List<global::Onnx.AttributeProto> { Attr.Ints("strides", geo.Dilations), Attr.Ints("dilations", geo.Strides), Attr.Ints("pads", pads), Attr.Int("group", group) };
        if (dySpatial is not null) convAttrs.Add(Attr.Ints("kernel_shape", dySpatial));
        var conv = ctx.Op("Conv", [xT, dyT], [.. convAttrs]);
        var cropped = ctx.Op("Slice", conv, ctx.Ints(new long[k]), ctx.Ints(kernel), ctx.Ints(geo.SpatialAxes));
        return ctx.Op("Transpose", [cropped], Attr.Ints("perm", [1, 0, .. spatialPerm]));
    }
}

[GradientRule("ConvTranspose")]
internal sealed class ConvTransposeGradient : GradientRule
{
    // y = ConvTranspose(x, W) is the adjoint of x' = Conv(y', W) (same strides, dilations, pads, group; W [Cin, Cout/G, K]):
    //   dX = Conv(dY, W) (output_padding only adds rows no window of the Conv reads back: the sizes match)
    //   dW = the Conv weight gradient with dY as the Conv's input and x as its output gradient
    //   dB = Σ dY over batch and spatial axes
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (ctx.Node.Find("output_shape") is not null || ctx.Node.GetString("auto_pad", "NOTSET") is not ("NOTSET" or ""))
            throw new OnnxTuneException($"{ctx.Node.Describe()}: the ConvTranspose gradient needs explicit pads (no output_shape or auto_pad).");
        var x = ctx.Input(0);
        var w = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        var wDims = ctx.TypeOf(w)?.Dims;
        if (wDims is null || wDims.Length < 3 || wDims.Any(d => d is null))
            throw new OnnxTuneException($"{ctx.Node.Describe()}: the ConvTranspose gradient needs the weight's static shape.");
        var kernel = wDims.Skip(2).Select(d => d!.Value).ToArray();
        var geo = WindowGeometry.Of(ctx.Node, kernel);
        var k = geo.Spatial;
        var pads = geo.ExplicitPads ?? new long[2 * k];
        var group = ctx.Node.GetInt("group", 1);
        var grads = new string?[ctx.InputCount];
        var attrs = new[] { Attr.Ints("kernel_shape", kernel), Attr.Ints("strides", geo.Strides), Attr.Ints("dilations", geo.Dilations), Attr.Ints("pads", pads), Attr.Int("group", group) };
        if (ctx.IsRequired(0)) grads[0] = ctx.Op("Conv", [dy, w], attrs);
        if (ctx.IsRequired(1))
        {
            var xSpatial = ctx.TypeOf(x)?.Dims is { } xd && xd.Length == k + 2 && xd.Skip(2).All(v => v.HasValue) ? xd.Skip(2).Select(v => v!.Value).ToArray() : null;
            grads[1] = ConvGradient.WeightGradient(ctx, dy, x, wDims[0]!.Value, wDims[1]!.Value, kernel, geo, pads, group, xSpatial);
        }
        if (ctx.HasInput(2) && ctx.IsRequired(2))
            grads[2] = ctx.ReduceSum(dy, [0, .. geo.SpatialAxes], keepDims: false);
        return grads;
    }
}
