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
        if (mode != "nearest")
            throw new GradientNotDefinedException("Resize", ctx.Node.Name, $"{ctx.Node.Describe()}: no gradient rule for Resize mode '{mode}' (nearest is supported).");
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
}
