using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

/// <summary>
/// BatchNormalization with given statistics (inference form, training_mode 0): y = (x − mean)·rstd·scale + B,
/// rstd = 1/√(var + ε), per channel (axis 1). Every input gets its gradient, mean and var included: the training
/// graph feeds this node batch statistics computed from x (see <c>Artifacts/BatchNormTraining</c>), and their
/// gradients flow back into x through ReduceMean, which makes the whole the batch-statistics gradient of PyTorch's
/// training-mode BatchNorm. With running statistics (frozen BN layers, eval-mode checks) it is the eval-mode gradient.
/// </summary>
[GradientRule("BatchNormalization")]
internal sealed class BatchNormalizationGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (ctx.Node.GetInt("training_mode", 0) != 0)
            throw new OnnxTuneException($"{ctx.Node.Describe()}: training_mode=1 BatchNormalization is not run by ONNX Runtime's stock kernels; " +
                "OnnxTune's training graph rewrites BatchNormalization itself (batch statistics from standard ops).");
        var x = ctx.Input(0);
        var scale = ctx.Input(1);
        var mean = ctx.Input(3);
        var variance = ctx.Input(4);
        var dy = ctx.GradOutput(0)!;
        var eps = ctx.Node.GetFloat("epsilon", 1e-5f);
        var (channel, reduceAxes) = ChannelBroadcast(ctx, x);
        string PerChannel(string v) => ctx.Op("Reshape", v, channel);
        string SumPerChannel(string t) => ctx.ReduceSum(t, reduceAxes, keepDims: false);

        var rstd = ctx.Op("Reciprocal", ctx.Op("Sqrt", ctx.Op("Add", variance, ctx.ScalarLike(eps, x))));
        var rstdC = PerChannel(rstd);
        var scaleRstdC = PerChannel(ctx.Op("Mul", scale, rstd));
        var grads = new string?[ctx.InputCount];
        var needXc = ctx.IsRequired(1) || ctx.IsRequired(4);
        var xc = needXc ? ctx.Op("Sub", x, PerChannel(mean)) : null;
        if (ctx.IsRequired(0)) grads[0] = ctx.Op("Mul", dy, scaleRstdC);
        if (ctx.IsRequired(1)) grads[1] = SumPerChannel(ctx.Op("Mul", dy, ctx.Op("Mul", xc!, rstdC)));
        if (ctx.IsRequired(2)) grads[2] = SumPerChannel(dy);
        if (ctx.IsRequired(3)) grads[3] = ctx.Op("Neg", ctx.Op("Mul", SumPerChannel(dy), ctx.Op("Mul", scale, rstd)));
        if (ctx.IsRequired(4))
        {
            // d/dvar rstd = −rstd³/2
            var rstd3 = ctx.Op("Mul", rstd, ctx.Op("Mul", rstd, rstd));
            var coef = ctx.Op("Mul", ctx.Op("Mul", scale, rstd3), ctx.ScalarLike(-0.5f, x));
            grads[4] = ctx.Op("Mul", SumPerChannel(ctx.Op("Mul", dy, xc!)), coef);
        }
        return grads;
    }

    /// <summary>Shape [1, C, 1, ...] (int64) for per-channel vectors, and the axes to sum per channel.</summary>
    private static (string Shape, long[] Axes) ChannelBroadcast(GradientContext ctx, string x)
    {
        var rank = ctx.RankOf(x) ?? throw new OnnxTuneException($"{ctx.Node.Describe()}: the BatchNormalization gradient needs the input's rank.");
        var shape = new long[rank];
        Array.Fill(shape, 1L);
        if (rank > 1) shape[1] = -1;
        var axes = Enumerable.Range(0, rank).Where(i => i != 1).Select(i => (long)i).ToArray();
        return (ctx.Ints(shape), axes);
    }
}

/// <summary>
/// InstanceNormalization: per (sample, channel) over the spatial axes, xhat = (x − mean)·rstd, y = scale·xhat + B.
/// With g = dY·scale: dX = rstd·(g − mean(g) − xhat·mean(g·xhat)); dscale = Σ dY·xhat, dB = Σ dY over batch and
/// spatial axes. The statistics are recomputed from x (the op has no statistics outputs).
/// </summary>
[GradientRule("InstanceNormalization")]
internal sealed class InstanceNormalizationGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var scale = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        var eps = ctx.Node.GetFloat("epsilon", 1e-5f);
        var rank = ctx.RankOf(x) ?? throw new OnnxTuneException($"{ctx.Node.Describe()}: the InstanceNormalization gradient needs the input's rank.");
        var spatial = Enumerable.Range(2, rank - 2).Select(i => (long)i).ToArray();
        var channelShape = ctx.Ints([1, -1, .. Enumerable.Repeat(1L, rank - 2)]);
        string Sum(string t) => ctx.ReduceSum(t, spatial, keepDims: true);
        var sum = Sum(x);
        var count = ctx.Op("Cast", [ctx.Op("Div", ctx.Op("Size", x), ctx.Op("Size", sum))], Attr.Int("to", (long)ctx.ElementTypeOf(x)));
        string Mean(string t) => ctx.Op("Div", Sum(t), count);
        var xc = ctx.Op("Sub", x, ctx.Op("Div", sum, count));
        var rstd = ctx.Op("Reciprocal", ctx.Op("Sqrt", ctx.Op("Add", Mean(ctx.Op("Mul", xc, xc)), ctx.ScalarLike(eps, x))));
        var xhat = ctx.Op("Mul", xc, rstd);
        var grads = new string?[ctx.InputCount];
        if (ctx.IsRequired(0))
        {
            var g = ctx.Op("Mul", dy, ctx.Op("Reshape", scale, channelShape));
            grads[0] = ctx.Op("Mul", rstd, ctx.Op("Sub", ctx.Op("Sub", g, Mean(g)), ctx.Op("Mul", xhat, Mean(ctx.Op("Mul", g, xhat)))));
        }
        long[] paramAxes = [0, .. spatial];
        if (ctx.IsRequired(1)) grads[1] = ctx.ReduceSum(ctx.Op("Mul", dy, xhat), paramAxes, keepDims: false);
        if (ctx.IsRequired(2)) grads[2] = ctx.ReduceSum(dy, paramAxes, keepDims: false);
        return grads;
    }
}
