using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Migration.Import;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Migration.Tests;

public sealed class HuggingFaceAdamWTests
{
    // transformers.AdamW.step (ORT's adam_mode 1), in float64.
    private static (double[] P, double[] M, double[] V) Reference(double[] p, double[] g, double[] m, double[] v, double lr, long t, OptimizerSpec s, bool correctBias)
    {
        var (pn, mn, vn) = (new double[p.Length], new double[p.Length], new double[p.Length]);
        var stepSize = correctBias ? lr * Math.Sqrt(1 - Math.Pow(s.Beta2, t)) / (1 - Math.Pow(s.Beta1, t)) : lr;
        for (var i = 0; i < p.Length; i++)
        {
            mn[i] = s.Beta1 * m[i] + (1 - s.Beta1) * g[i];
            vn[i] = s.Beta2 * v[i] + (1 - s.Beta2) * g[i] * g[i];
            var q = p[i] - stepSize * mn[i] / (Math.Sqrt(vn[i]) + s.Epsilon);
            pn[i] = q - lr * s.WeightDecay * q;
        }
        return (pn, mn, vn);
    }

    [Theory]
    [InlineData(true, 0.0)]
    [InlineData(true, 0.05)]
    [InlineData(false, 0.01)]
    public void The_graph_computes_HuggingFace_AdamW(bool correctBias, double weightDecay)
    {
        var spec = new OptimizerSpec { Kind = OptimizerKind.AdamW, Beta1 = 0.9, Beta2 = 0.999, Epsilon = 1e-6, WeightDecay = weightDecay };
        var model = HuggingFaceAdamWGraph.Build([new TensorSpec("w", "float", ["2", "3"])], spec, correctBias, 14);
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        var rng = new Random(7);
        float[] R(double scale, bool positive = false) => Enumerable.Range(0, 6).Select(_ => (float)((positive ? rng.NextDouble() : rng.NextDouble() - 0.5) * scale)).ToArray();
        var (p, g, m, v) = (R(2), R(1), R(0.1), R(0.01, positive: true));
        const float lr = 0.01f;
        const long step = 3;
        var feeds = new Dictionary<string, OrtValue>
        {
            ["learning_rate"] = OrtValue.CreateTensorValueFromMemory(new[] { lr }, []),
            ["step"] = OrtValue.CreateTensorValueFromMemory(new[] { step }, []),
            ["w"] = OrtValue.CreateTensorValueFromMemory(p, [2, 3]),
            ["w.grad"] = OrtValue.CreateTensorValueFromMemory(g, [2, 3]),
            ["w.exp_avg"] = OrtValue.CreateTensorValueFromMemory(m, [2, 3]),
            ["w.exp_avg_sq"] = OrtValue.CreateTensorValueFromMemory(v, [2, 3]),
        };
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, feeds, ["w.out", "w.exp_avg.out", "w.exp_avg_sq.out"]);
        foreach (var f in feeds.Values) f.Dispose();
        static double[] D(float[] a) => a.Select(x => (double)x).ToArray();
        var (ep, em, ev) = Reference(D(p), D(g), D(m), D(v), lr, step, spec, correctBias);
        var (ap, am, av) = (outputs[0].GetTensorDataAsSpan<float>().ToArray(), outputs[1].GetTensorDataAsSpan<float>().ToArray(), outputs[2].GetTensorDataAsSpan<float>().ToArray());
        for (var i = 0; i < 6; i++)
        {
            Assert.Equal(em[i], am[i], 1e-7);
            Assert.Equal(ev[i], av[i], 1e-8);
            Assert.Equal(ep[i], ap[i], 2e-6);
            Assert.NotEqual(p[i], ap[i]);
        }
    }
}
