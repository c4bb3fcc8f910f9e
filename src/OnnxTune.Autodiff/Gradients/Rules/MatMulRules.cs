using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("MatMul")]
internal sealed class MatMulGradient : GradientRule
{
    // y = a @ b (numpy semantics): da = dy @ b^T, db = a^T @ dy, each summed over broadcast batch dims.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var a = ctx.Input(0);
        var b = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        var ra = ctx.RankOf(a) ?? throw new OnnxTuneException($"MatMul gradient needs the rank of '{a}' ({ctx.Node.Describe()}); it could not be inferred.");
        var rb = ctx.RankOf(b) ?? throw new OnnxTuneException($"MatMul gradient needs the rank of '{b}' ({ctx.Node.Describe()}); it could not be inferred.");

        // 1-D operands: lift to matrices, as numpy does, and drop the dim again at the end.
        string a2 = a, b2 = b, dy2 = dy;
        int ra2 = ra, rb2 = rb;
        if (ra == 1) { a2 = ctx.Op("Unsqueeze", a, ctx.Ints(0)); dy2 = ctx.Op("Unsqueeze", dy2, ctx.Ints(-2)); ra2 = 2; }
        if (rb == 1) { b2 = ctx.Op("Unsqueeze", b, ctx.Ints(1)); dy2 = ctx.Op("Unsqueeze", dy2, ctx.Ints(-1)); rb2 = 2; }
        var ry = Math.Max(ra2, rb2);

        string? da = null, db = null;
        if (ctx.IsRequired(0))
        {
            da = ctx.Op("MatMul", dy2, Transpose(ctx, b2, rb2));
            da = ra > 1 && rb > 1 ? ctx.SumToShapeOf(da, a2, OperandGradType(ctx, a, ry)) : ctx.SumToShapeOf(da, a2, ry);
            if (ra == 1) da = ctx.Op("Squeeze", da, ctx.Ints(0));
        }
        if (ctx.IsRequired(1))
        {
            if (rb2 == 2 && ra2 > 2)
            {
                // Common case x[..., M, K] @ w[K, N]: fold the batch dims into M, one matrix product dW = xᵀ·dy.
                // The transpose is explicit (x[..., K] → [K, ...] → [K, tokens]) rather than Gemm transA=1: MLAS
                // re-transposes strips of a transA operand for every column block, and the whole product ran 10–38%
                // slower than one Transpose pass plus a plain MatMul (benchmarks --weight-grad-forms). The Reshape
                // between them keeps ONNX Runtime's MatmulTransposeFusion from folding the Transpose back into a
                // FusedMatMul(transA), and identical Transposes of a shared input (Q, K, V) are merged by its CSE.
                var perm = new long[ra2];
                perm[0] = ra2 - 1;
                for (var i = 1; i < ra2; i++) perm[i] = i - 1;
                var aT = ctx.Op("Reshape", ctx.Op("Transpose", [a2], Attr.Ints("perm", perm)), LastDimFirstShape(ctx, a2));
                var dyFlat = ctx.Op("Reshape", dy2, LastDimFlatShape(ctx, dy2));
                db = ctx.Op("MatMul", aT, dyFlat);
            }
            else
            {
                db = ctx.Op("MatMul", Transpose(ctx, a2, ra2), dy2);
                db = ra > 1 && rb > 1 ? ctx.SumToShapeOf(db, b2, OperandGradType(ctx, b, ry)) : ctx.SumToShapeOf(db, b2, ry);
            }
            if (rb == 1) db = ctx.Op("Squeeze", db, ctx.Ints(1));
        }
        return [da, db];
    }

    // Shape of an operand's gradient before the batch reduction: the output's batch dims, the operand's matrix dims.
    private static TensorTypeInfo OperandGradType(GradientContext ctx, string operand, int rank)
    {
        var y = TensorTypeInference.Sym(ctx.TypeOf(ctx.Output(0)));
        var x = TensorTypeInference.Sym(ctx.TypeOf(operand));
        if (y is null || x is null || y.Length != rank || x.Length < 2) return new TensorTypeInfo(ctx.ElementTypeOf(operand), new long?[rank]);
        return TensorTypeInference.Make(ctx.ElementTypeOf(operand), [.. y[..^2], x[^2], x[^1]]);
    }

    // [-1, last dim] as a shape tensor (static when the last dim is known).
    private static string LastDimFlatShape(GradientContext ctx, string x)
    {
        if (ctx.TypeOf(x)?.Dims is { Length: > 0 } d && d[^1] is { } last) return ctx.Ints(-1, last);
        var lastDim = ctx.Op("Slice", ctx.ShapeOf(x), ctx.Ints(-1), ctx.Ints(long.MaxValue));
        return ctx.Op("Concat", [ctx.Ints(-1), lastDim], Attr.Int("axis", 0));
    }

    // [last dim, -1] as a shape tensor (static when the last dim is known).
    private static string LastDimFirstShape(GradientContext ctx, string x)
    {
        if (ctx.TypeOf(x)?.Dims is { Length: > 0 } d && d[^1] is { } last) return ctx.Ints(last, -1);
        var lastDim = ctx.Op("Slice", ctx.ShapeOf(x), ctx.Ints(-1), ctx.Ints(long.MaxValue));
        return ctx.Op("Concat", [lastDim, ctx.Ints(-1)], Attr.Int("axis", 0));
    }

    private static string Transpose(GradientContext ctx, string x, int rank)
    {
        var perm = Enumerable.Range(0, rank).Select(i => (long)i).ToArray();
        (perm[rank - 1], perm[rank - 2]) = (perm[rank - 2], perm[rank - 1]);
        return ctx.Op("Transpose", [x], Attr.Ints("perm", perm));
    }
}

[GradientRule("Gemm")]
internal sealed class GemmGradient : GradientRule
{
    // y = alpha * A' B' + beta * C, where A' = transA ? A^T : A and B' likewise.
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var a = ctx.Input(0);
        var b = ctx.Input(1);
        var dy = ctx.GradOutput(0)!;
        var transA = ctx.Node.GetInt("transA", 0) != 0;
        var transB = ctx.Node.GetInt("transB", 0) != 0;
        var alpha = ctx.Node.GetFloat("alpha", 1f);
        var beta = ctx.Node.GetFloat("beta", 1f);

        string? da = null, db = null, dc = null;
        if (ctx.IsRequired(0))
            da = transA
                ? Gemm(ctx, b, dy, transB, true, alpha)    // dA = alpha * B' dY^T
                : Gemm(ctx, dy, b, false, !transB, alpha); // dA = alpha * dY B'^T
        if (ctx.IsRequired(1))
            db = transB
                ? Gemm(ctx, dy, a, true, transA, alpha)    // dB = alpha * dY^T A'
                : Gemm(ctx, a, dy, !transA, false, alpha); // dB = alpha * A'^T dY
        if (ctx.HasInput(2) && ctx.IsRequired(2))
        {
            var g = beta == 1f ? dy : ctx.Op("Mul", dy, ctx.ScalarLike(beta, dy));
            dc = ctx.SumToShapeOf(g, ctx.Input(2), gradShapeLike: ctx.Output(0));
        }
        return [da, db, dc];
    }

    private static string Gemm(GradientContext ctx, string x, string y, bool tx, bool ty, float alpha) =>
        ctx.Op("Gemm", [x, y], Attr.Int("transA", tx ? 1 : 0), Attr.Int("transB", ty ? 1 : 0), Attr.Float("alpha", alpha));
}
