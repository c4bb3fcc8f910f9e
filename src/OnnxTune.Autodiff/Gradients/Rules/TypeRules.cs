using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("Cast")]
internal sealed class CastGradient : GradientRule
{
    // Between floating types the gradient is cast back to the input's type. Casts to integer or bool types carry
    // no gradient: the walker never marks their outputs as requiring one, so the rule is not reached for them.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var to = (DataType)ctx.Node.GetInt("to", 1);
        if (!TensorProtos.IsFloating(to)) return [null];
        return [ctx.Op("Cast", [ctx.GradOutput(0)!], Attr.Int("to", (long)ctx.ElementTypeOf(ctx.Input(0))))];
    }
}
