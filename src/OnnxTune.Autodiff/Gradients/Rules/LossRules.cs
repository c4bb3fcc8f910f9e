using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("SoftmaxCrossEntropyLoss", SinceVersion = 12)]
internal sealed class SoftmaxCrossEntropyLossGradient : GradientRule
{
    // scores [N, C, d...], labels [N, d...]. With p = softmax(scores, axis 1) and mask = labels != ignore_index:
    // d scores = (p - onehot(labels)) * mask * w(dy), where w = dy / count(mask) for mean, dy for sum,
    // and dy (per element) for none; a gradient g on log_prob (label smoothing reads it) adds g - p * sum(g, axis 1).
    // Class weights (input 2) are not supported.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        if (ctx.HasInput(2))
            throw new OnnxTuneException($"The gradient of {ctx.Node.Describe()} with class weights (input 3) is not supported.");
        if (ctx.Node.Output.Count < 2 || ctx.Node.Output[1].Length == 0)
            throw new OnnxTuneException($"{ctx.Node.Describe()} must expose its log_prob output (second output) for its gradient; OnnxTune's loss blocks always do.");
        var scores = ctx.Input(0);
        var labels = ctx.Input(1);
        var dy = ctx.GradOutput(0);
        var dLogProb = ctx.GradOutput(1);
        var reduction = ctx.Node.GetString("reduction", "mean");
        var rank = ctx.RankOf(scores) ?? 2;

        var prob = ctx.Op("Exp", ctx.Output(1));
        var fromLogProb = dLogProb is null ? null : ctx.Op("Sub", dLogProb, ctx.Op("Mul", prob, ctx.ReduceSum(dLogProb, [1], keepDims: true)));
        if (dy is null) return [fromLogProb, null];
        // onehot via Equal(labels[:, None, ...], range(C) shaped [1, C, 1, ...])
        var classes = ctx.Op("Gather", [ctx.ShapeOf(scores), ctx.Ints(1)], Attr.Int("axis", 0));
        var classRange = ctx.Op("Range", ctx.ScalarInt64(0), ctx.Op("Squeeze", classes, ctx.Ints(0)), ctx.ScalarInt64(1));
        var rangeShape = Enumerable.Repeat(1L, rank).ToArray();
        rangeShape[1] = -1;
        var rangeNd = ctx.Op("Reshape", classRange, ctx.Ints(rangeShape));
        var labelsNd = ctx.Op("Unsqueeze", labels, ctx.Ints(1));
        var onehot = ctx.Op("Cast", [ctx.Op("Equal", labelsNd, rangeNd)], Attr.Int("to", (long)ctx.ElementTypeOf(scores)));
        var diff = ctx.Op("Sub", prob, onehot);

        string weight; // per-label-position weight, shape [N, d...] or scalar
        var ignore = ctx.Node.Find("ignore_index") is { } ig ? ig.I : (long?)null;
        string? mask = null;
        if (ignore is { } ii)
        {
            var keep = ctx.Op("Not", ctx.Op("Equal", labels, ctx.ScalarInt64(ii)));
            mask = ctx.Op("Cast", [keep], Attr.Int("to", (long)ctx.ElementTypeOf(scores)));
        }
        switch (reduction)
        {
            case "mean":
                {
                    var count = mask is null
                        ? ctx.Op("Cast", [ctx.Op("Size", labels)], Attr.Int("to", (long)ctx.ElementTypeOf(scores)))
                        : ctx.Op("ReduceSum", [mask], Attr.Int("keepdims", 0));
                    var scale = ctx.Op("Div", dy, count);
                    weight = mask is null ? scale : ctx.Op("Mul", mask, scale);
                    break;
                }
            case "sum":
                weight = mask is null ? dy : ctx.Op("Mul", mask, dy);
                break;
            case "none":
                weight = mask is null ? dy : ctx.Op("Mul", mask, dy);
                break;
            default:
                throw new OnnxTuneException($"{ctx.Node.Describe()} has unknown reduction '{reduction}'.");
        }
        var weightNd = mask is null && reduction != "none" ? weight : ctx.Op("Unsqueeze", weight, ctx.Ints(1));
        var fromLoss = ctx.Op("Mul", diff, weightNd);
        return [fromLogProb is null ? fromLoss : ctx.Op("Add", fromLoss, fromLogProb), null];
    }
}
