namespace OnnxTune.Training.Tests.Optimizers;

/// <summary>PyTorch's AdamW / SGD / clip_grad_norm_ written out in float64, one parameter list at a time.</summary>
internal static class ReferenceOptimizers
{
    public static void AdamW(double[][] p, double[][] g, double[][] m, double[][] v, long step, double lr, double b1 = 0.9, double b2 = 0.999, double eps = 1e-8, double wd = 0.01)
    {
        for (var k = 0; k < p.Length; k++)
            for (var i = 0; i < p[k].Length; i++)
            {
                p[k][i] *= 1 - lr * wd;
                m[k][i] = b1 * m[k][i] + (1 - b1) * g[k][i];
                v[k][i] = b2 * v[k][i] + (1 - b2) * g[k][i] * g[k][i];
                var bc1 = 1 - Math.Pow(b1, step);
                var bc2 = 1 - Math.Pow(b2, step);
                p[k][i] -= lr / bc1 * m[k][i] / (Math.Sqrt(v[k][i]) / Math.Sqrt(bc2) + eps);
            }
    }

    public static void Sgd(double[][] p, double[][] g, double[][] buf, long step, double lr, double momentum = 0, double dampening = 0, bool nesterov = false, double wd = 0)
    {
        for (var k = 0; k < p.Length; k++)
            for (var i = 0; i < p[k].Length; i++)
            {
                var d = g[k][i] + wd * p[k][i];
                if (momentum != 0)
                {
                    buf[k][i] = step == 1 ? d : momentum * buf[k][i] + (1 - dampening) * d;
                    d = nesterov ? d + momentum * buf[k][i] : buf[k][i];
                }
                p[k][i] -= lr * d;
            }
    }

    /// <summary>Scales <paramref name="g"/> in place; returns the total norm.</summary>
    public static double ClipGradNorm(double[][] g, double maxNorm)
    {
        var total = Math.Sqrt(g.Sum(x => x.Sum(v => v * v)));
        var coef = Math.Min(maxNorm / (total + 1e-6), 1.0);
        foreach (var x in g)
            for (var i = 0; i < x.Length; i++) x[i] *= coef;
        return total;
    }
}
