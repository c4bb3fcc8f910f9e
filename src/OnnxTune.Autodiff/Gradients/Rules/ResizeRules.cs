using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("Resize", SinceVersion = 11)]
internal sealed class ResizeGradient : GradientRule
{
    // Nearest: every output copies one input element. Resizing a tensor of flat element positions with the node's
    // own inputs and attributes (so every coordinate transformation and rounding mode is ORT's) says which; dX is dY
    // scatter-added there. Positions travel as float32, exact up to 2^24 elements per tensor.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var mode = ctx.Node.GetString("mode", "nearest");
        if (mode == "linear") return [Linear(ctx), .. new string?[ctx.InputCount - 1]];
        if (mode != "nearest")
            throw new GradientNotDefinedException("Resize", ctx.Node.Name, $"{ctx.Node.Describe()}: no gradient rule for Resize mode '{mode}' (nearest and linear are supported).");
        ctx.RequireOpset(16);
        var x = ctx.Input(0);
        var size = ctx.Op("Size", x);
        var positions = ctx.Op("Cast", [ctx.Op("Range", ctx.ScalarInt64(0), size, ctx.ScalarInt64(1))], Attr.Int("to", (long)global::Onnx.TensorProto.Types.DataType.Float));
        var grid = ctx.Op("Reshape", positions, ctx.ShapeOf(x));
        var inputs = ctx.Node.Input.ToArray();
        inputs[0] = grid;
        var sources = ctx.Op("Resize", inputs, [.. ctx.Node.Attribute]);
        var flatSources = ctx.Op("Reshape", ctx.Op("Cast", [sources], Attr.Int("to", (long)global::Onnx.TensorProto.Types.DataType.Int64)), ctx.Ints(-1));
        var zeros = ctx.ZerosOfShape(ctx.Op("Reshape", size, ctx.Ints(1)), x);
        var scattered = ctx.Op("ScatterElements", [zeros, flatSources, ctx.Op("Reshape", ctx.GradOutput(0)!, ctx.Ints(-1))], Attr.Int("axis", 0), Attr.String("reduction", "add"));
        var grads = new string?[ctx.InputCount];
        grads[0] = ctx.ReshapeLike(scattered, x);
        return grads;
    }

    // Linear: separable, one axis at a time. Resizing a grid that counts along axis a (constant elsewhere) with the
    // node's own inputs gives each output's source coordinate c on that axis (ORT's transformation and clamping):
    // the output took (1 − w)·x[⌊c⌋] + w·x[⌊c⌋ + 1] with w = c − ⌊c⌋, so dY is scatter-added there with those weights.
    private static string Linear(GradientContext ctx)
    {
        if (ctx.Node.GetInt("antialias", 0) != 0 || ctx.Node.GetString("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize")
            throw new GradientNotDefinedException("Resize", ctx.Node.Name, $"{ctx.Node.Describe()}: the linear Resize gradient supports neither antialias nor tf_crop_and_resize.");
        ctx.RequireOpset(16);
        var x = ctx.Input(0);
        var rank = ctx.RankOf(x) ?? throw new OnnxTuneException($"{ctx.Node.Describe()}: the Resize gradient needs the input's rank.");
        var scales = ctx.HasInput(2) ? ctx.ConstantFloats(ctx.Input(2)) : null;
        var usesSizes = ctx.HasInput(3);
        var floatType = (long)global::Onnx.TensorProto.Types.DataType.Float;
        var t = ctx.GradOutput(0)!;
        var xShape = ctx.ShapeOf(x);
        for (var a = 0; a < rank; a++)
        {
            if (!usesSizes && scales is { } sc && sc.Length == rank && sc[a] == 1f) continue; // axis not resized
            var length = ctx.Op("Gather", [xShape, ctx.Ints(a)], Attr.Int("axis", 0)); // [1]
            var lineShape = Enumerable.Repeat(1L, rank).ToArray();
            lineShape[a] = -1;
            var counting = ctx.Op("Cast", [ctx.Op("Range", ctx.ScalarInt64(0), ctx.Op("Squeeze", length, ctx.Ints(0)), ctx.ScalarInt64(1))], Attr.Int("to", floatType));
            var grid = ctx.Op("Expand", ctx.Op("Reshape", counting, ctx.Ints(lineShape)), xShape);
            var inputs = ctx.Node.Input.ToArray();
            inputs[0] = grid;
            var coords = ctx.Op("Resize", inputs, [.. ctx.Node.Attribute]);
            var others = Enumerable.Range(0, rank).Where(i => i != a).Select(i => (long)i).ToArray();
            var line = others.Length == 0 ? coords : ctx.Op("Slice", coords, ctx.Ints(new long[others.Length]), ctx.Ints(Enumerable.Repeat(1L, others.Length).ToArray()), ctx.Ints(others));
            if (ctx.ElementTypeOf(x) != global::Onnx.TensorProto.Types.DataType.Float)
                line = ctx.Op("Cast", [line], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
            var lowF = ctx.Op("Floor", line);
            var w = ctx.Op("Sub", line, lowF);
            var low = ctx.Op("Cast", [lowF], Attr.Int("to", (long)global::Onnx.TensorProto.Types.DataType.Int64));
            var high = ctx.Op("Min", ctx.Op("Add", low, ctx.ScalarInt64(1)), ctx.Op("Sub", length, ctx.Ints(1)));
            var tShape = ctx.Op("Shape", t);
            var target = ctx.Op("Concat", [ctx.Op("Slice", tShape, ctx.Ints(0), ctx.Ints(a)), length, ctx.Op("Slice", tShape, ctx.Ints(a + 1), ctx.Ints(rank))], Attr.Int("axis", 0));
            var zeros = ctx.ZerosOfShape(target, x);
            var lowPart = ctx.Op("Mul", t, ctx.Op("Sub", ctx.ScalarLike(1f, x), w));
            var highPart = ctx.Op("Mul", t, w);
            var first = ctx.Op("ScatterElements", [zeros, ctx.Op("Expand", low, tShape), lowPart], Attr.Int("axis", a), Attr.String("reduction", "add"));
            t = ctx.Op("ScatterElements", [first, ctx.Op("Expand", high, tShape), highPart], Attr.Int("axis", a), Attr.String("reduction", "add"));
        }
        return t;
    }
}
