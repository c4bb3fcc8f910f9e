using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("LayerNormalization", SinceVersion = 17)]
internal sealed class LayerNormalizationGradient : GradientRule
{
    // Over the normalized axes (axis..rank-1), with xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps), g = dY * scale:
    //   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dscale = sum(dY * xhat),  dbias = sum(dY)
    // (the parameter sums run over the leading axes). When x is in the stash type (float32, the default) the
    // statistics come from the forward node's Mean/InvStdDev outputs, as ORT's own LayerNormalizationGrad does;
    // otherwise (float64 gradient checks) they are recomputed from x in x's own precision.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (ctx.GradOutput(1) is not null || ctx.GradOutput(2) is not null)
            throw new OnnxTuneException($"{ctx.Node.Describe()}: gradients through its Mean/InvStdDev outputs are not supported.");
        var x = ctx.Input(0);
        var scale = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        var axis = ctx.Node.GetInt("axis", -1);
        var eps = ctx.Node.GetFloat("epsilon", 1e-5f);
        var rank = ctx.RankOf(x);

        string axes;
        if (rank is { } r)
        {
            var a = axis < 0 ? axis + r : axis;
            axes = ctx.Ints(Enumerable.Range((int)a, (int)(r - a)).Select(i => (long)i).ToArray());
        }
        else
        {
            var rankT = ctx.Op("Size", ctx.ShapeOf(x));
            var start = axis < 0 ? ctx.Op("Add", rankT, ctx.ScalarInt64(axis)) : ctx.ScalarInt64(axis);
            axes = ctx.Op("Range", start, rankT, ctx.ScalarInt64(1));
        }
        string Sum(string t) => ctx.Op("ReduceSum", [t, axes], Attr.Int("keepdims", 1));
        string count;
        string rstd, xhat;
        var stash = (global::Onnx.TensorProto.Types.DataType)ctx.Node.GetInt("stash_type", 1);
        if (ctx.ElementTypeOf(x) == stash)
        {
            var mu = ctx.ForwardOutput(1);
            rstd = ctx.ForwardOutput(2);
            count = ctx.Op("Cast", [ctx.Op("Div", ctx.Op("Size", x), ctx.Op("Size", mu))], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
            xhat = ctx.Op("Mul", ctx.Op("Sub", x, mu), rstd);
        }
        else
        {
            var mean0 = Sum(x);
            count = ctx.Op("Cast", [ctx.Op("Div", ctx.Op("Size", x), ctx.Op("Size", mean0))], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
            var mu = ctx.Op("Div", mean0, count);
            var xc = ctx.Op("Sub", x, mu);
            var variance = ctx.Op("Div", Sum(ctx.Op("Mul", xc, xc)), count);
            rstd = ctx.Op("Reciprocal", ctx.Op("Sqrt", ctx.Op("Add", variance, ctx.ScalarLike(eps, x))));
            xhat = ctx.Op("Mul", xc, rstd);
        }
        string Mean(string t) => ctx.Op("Div", Sum(t), count);

        var grads = new string?[ctx.InputCount];
        if (ctx.IsRequired(0))
        {
            var g = ctx.Op("Mul", dy, scale);
            var inner = ctx.Op("Sub", ctx.Op("Sub", g, Mean(g)), ctx.Op("Mul", xhat, Mean(ctx.Op("Mul", g, xhat))));
            grads[0] = ctx.Op("Mul", rstd, inner);
        }
        if (ctx.IsRequired(1)) grads[1] = ctx.SumToShapeOf(ctx.Op("Mul", dy, xhat), scale, gradShapeLike: ctx.Output(0));
        if (ctx.HasInput(2) && ctx.IsRequired(2)) grads[2] = ctx.SumToShapeOf(dy, ctx.Input(2), gradShapeLike: ctx.Output(0));
        return grads;
    }
}
