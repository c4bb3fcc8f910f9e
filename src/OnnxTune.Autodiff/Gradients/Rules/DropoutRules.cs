using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("Dropout", SinceVersion = 12)]
internal sealed class DropoutGradient : GradientRule
{
    // Training mode: y = x * mask / (1 - ratio), so dx = dY * mask / (1 - ratio), with the very mask the forward
    // run drew (the node's second output). When the node does not expose its mask the rule names that output, so
    // forward and backward share one random draw. Inference mode (training_mode absent or false) is the identity.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var dy = ctx.GradOutput(0)!;
        var grads = new string?[ctx.InputCount];
        if (!ctx.HasInput(2)) { grads[0] = dy; return grads; }
        var mode = ctx.ConstantInts(ctx.Input(2));
        if (mode is [0]) { grads[0] = dy; return grads; }

        if (ctx.Node.Output.Count < 2 || ctx.Node.Output[1].Length == 0)
        {
            var name = ctx.Intermediate("mask");
            if (ctx.Node.Output.Count < 2) ctx.Node.Output.Add(name);
            else ctx.Node.Output[1] = name;
        }
        var x = ctx.Input(0);
        var mask = ctx.Op("Cast", [ctx.Output(1)], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
        string scale;
        if (ctx.HasInput(1))
        {
            var ratio = ctx.Op("Cast", [ctx.Input(1)], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
            scale = ctx.Op("Div", mask, ctx.Op("Sub", ctx.ScalarLike(1f, x), ratio));
        }
        else scale = ctx.Op("Mul", mask, ctx.ScalarLike(2f, x)); // default ratio 0.5
        var trained = ctx.Op("Mul", dy, scale);
        grads[0] = mode is [1] ? trained : ctx.Op("Where", ctx.Input(2), trained, dy);
        return grads;
    }
}
