using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("Pad", SinceVersion = 11)]
internal sealed class PadGradient : GradientRule
{
    // Constant mode: dX is the interior of dY, Slice(dY, begin, begin + shape(x)) over the padded axes (all axes, or
    // the opset-18 axes input). The pad value (input 2) is a constant and gets no gradient. Pads must be >= 0.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var mode = ctx.Node.GetString("mode", "constant");
        if (mode != "constant")
            throw new GradientNotDefinedException("Pad", ctx.Node.Name, $"{ctx.Node.Describe()}: no gradient rule for Pad mode '{mode}' (constant is supported).");
        var x = ctx.Input(0);
        var pads = ctx.Input(1);
        var grads = new string?[ctx.InputCount];
        var constant = ctx.ConstantInts(pads);
        if (constant is not null && constant.Any(p => p < 0))
            throw new OnnxTuneException($"{ctx.Node.Describe()}: the Pad gradient needs non-negative pads.");
        string axes;
        long count;
        if (ctx.HasInput(3))
        {
            axes = ctx.Input(3);
            count = ctx.ConstantInts(axes)?.Length ?? throw new OnnxTuneException($"{ctx.Node.Describe()}: the Pad gradient needs constant axes.");
        }
        else
        {
            count = constant is not null ? constant.Length / 2 : ctx.RankOf(x) ?? throw new OnnxTuneException($"{ctx.Node.Describe()}: the Pad gradient needs the input's rank or constant pads.");
            axes = ctx.Ints(Enumerable.Range(0, (int)count).Select(i => (long)i).ToArray());
        }
        var begin = constant is not null ? ctx.Ints(constant[..(int)count]) : ctx.Op("Slice", pads, ctx.Ints(0), ctx.Ints(count));
        var sizes = ctx.Op("Gather", [ctx.ShapeOf(x), axes], Attr.Int("axis", 0));
        grads[0] = ctx.Op("Slice", ctx.GradOutput(0)!, begin, ctx.Op("Add", begin, sizes), axes);
        return grads;
    }
}
