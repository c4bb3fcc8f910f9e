using OnnxTune.Onnx.Graph;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Gradients.Rules;

// Gathers scatter their gradient back with ScatterND / ScatterElements(reduction="add"), which accumulates rows that
// were gathered more than once (repeated token ids). The reduction attribute exists from opset 16, so these rules
// raise the training graph's opset import to 16 when the model is older (13–15): the forward ops keep their meaning.

internal static class GatherGradients
{
    /// <summary>Indices as int64 with negative entries wrapped (index + size of the gathered axis).</summary>
    public static string NormalizedIndices(GradientContext ctx, string data, string indices, long axis)
    {
        var idx = ctx.TypeOf(indices)?.ElementType == DataType.Int64 ? indices : ctx.Op("Cast", [indices], Attr.Int("to", (long)DataType.Int64));
        var size = ctx.Op("Gather", [ctx.ShapeOf(data), ctx.ScalarInt64(axis)], Attr.Int("axis", 0)); // scalar: keeps the indices' rank
        var negative = ctx.Op("Less", idx, ctx.ScalarInt64(0));
        return ctx.Op("Where", negative, ctx.Op("Add", idx, size), idx);
    }
}

[GradientRule("Gather")]
internal sealed class GatherGradient : GradientRule
{
    // y[pre, idx..., post] = data[pre, indices[idx...], post]. Scatter-add dY into zeros shaped like data, with the
    // gathered axis moved to the front so ScatterND can address it.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (!ctx.IsRequired(0)) return [null, null];
        ctx.RequireOpset(16);
        var data = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var axis = ctx.Node.GetInt("axis", 0);
        var rd = ctx.RankOf(data);
        if (axis < 0)
            axis += rd ?? throw new OnnxTuneException($"The Gather gradient needs the rank of '{data}' for axis {axis} ({ctx.Node.Describe()}).");
        var idx = GatherGradients.NormalizedIndices(ctx, data, ctx.Input(1), axis);
        var scatterIdx = ctx.Op("Unsqueeze", idx, ctx.Ints(-1));
        var add = Attr.String("reduction", "add");
        if (axis == 0)
            return [ctx.Op("ScatterND", [ctx.ZerosOfShape(ctx.ShapeOf(data), data), scatterIdx, dy], add), null];

        var ri = ctx.RankOf(ctx.Input(1)) ?? throw new OnnxTuneException($"The Gather gradient along axis {axis} needs the rank of the indices '{ctx.Input(1)}' ({ctx.Node.Describe()}).");
        var a = (int)axis;
        var r = rd!.Value;
        // dY [pre(a), idx(ri), post] -> [idx, pre, post]; data [pre, d_a, post] -> [d_a, pre, post].
        var dyPerm = Enumerable.Range(a, ri).Concat(Enumerable.Range(0, a)).Concat(Enumerable.Range(a + ri, r - a - 1)).Select(i => (long)i).ToArray();
        var dataPerm = new[] { a }.Concat(Enumerable.Range(0, a)).Concat(Enumerable.Range(a + 1, r - a - 1)).Select(i => (long)i).ToArray();
        var inverse = new long[r];
        for (var i = 0; i < r; i++) inverse[dataPerm[i]] = i;
        var dyT = ctx.Op("Transpose", [dy], Attr.Ints("perm", dyPerm));
        var shapeT = ctx.Op("Gather", [ctx.ShapeOf(data), ctx.Ints(dataPerm)], Attr.Int("axis", 0));
        var scattered = ctx.Op("ScatterND", [ctx.ZerosOfShape(shapeT, data), scatterIdx, dyT], add);
        return [ctx.Op("Transpose", [scattered], Attr.Ints("perm", inverse)), null];
    }
}

[GradientRule("GatherElements")]
internal sealed class GatherElementsGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (!ctx.IsRequired(0)) return [null, null];
        ctx.RequireOpset(16);
        var data = ctx.Input(0);
        var axis = ctx.Node.GetInt("axis", 0);
        if (axis < 0)
            axis += ctx.RankOf(data) ?? throw new OnnxTuneException($"The GatherElements gradient needs the rank of '{data}' for axis {axis} ({ctx.Node.Describe()}).");
        var idx = GatherGradients.NormalizedIndices(ctx, data, ctx.Input(1), axis);
        return [ctx.Op("ScatterElements", [ctx.ZerosOfShape(ctx.ShapeOf(data), data), idx, ctx.GradOutput(0)!],
            Attr.Int("axis", axis), Attr.String("reduction", "add")), null];
    }
}
