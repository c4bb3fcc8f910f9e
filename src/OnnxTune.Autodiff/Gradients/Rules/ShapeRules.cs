using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

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

[GradientRule("Reshape")]
internal sealed class ReshapeGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx) => [ctx.ReshapeLike(ctx.GradOutput(0)!, ctx.Input(0)), null];
}
