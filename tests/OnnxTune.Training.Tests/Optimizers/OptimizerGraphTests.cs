using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Training.Tests.Optimizers;

public sealed class OptimizerGraphTests
{
    private static readonly TensorSpec[] Params = [new("w", "float", ["2", "3"]), new("b", "float", ["3"])];

    /// <summary>Runs the optimizer graph <paramref name="steps"/> times, feeding outputs back, with random grads.</summary>
    private static (double[][] P, double[][][] States) RunGraph(OptimizerSpec spec, double[][] p0, Func<int, double[][]> grads, int steps, Func<long, double> lr, TensorSpec[]? specs = null)
    {
        specs ??= Params;
        var model = OptimizerGraphBuilder.Build(specs, spec);
        Assert.All(model.Graph.Node, n => Assert.True(string.IsNullOrEmpty(n.Domain), $"{n.OpType} is not a default-domain op"));
        var suffixes = spec.StateSuffixes;
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        var p = p0.Select(a => (float[])Array.ConvertAll(a, x => (float)x)).ToArray();
        var states = suffixes.Select(_ => p0.Select(a => new float[a.Length]).ToArray()).ToArray();
        for (var t = 1; t <= steps; t++)
        {
            var g = grads(t);
            var inputs = new Dictionary<string, OrtValue>
            {
                ["learning_rate"] = OrtValue.CreateTensorValueFromMemory(new[] { (float)lr(t) }, []),
                ["step"] = OrtValue.CreateTensorValueFromMemory(new[] { (long)t }, []),
            };
            for (var k = 0; k < specs.Length; k++)
            {
                var shape = specs[k].FixedDims;
                inputs[specs[k].Name] = OrtValue.CreateTensorValueFromMemory(p[k], shape);
                inputs[specs[k].Name + ".grad"] = OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(g[k], x => (float)x), shape);
                for (var s = 0; s < suffixes.Count; s++)
                    inputs[specs[k].Name + suffixes[s]] = OrtValue.CreateTensorValueFromMemory(states[s][k], shape);
            }
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, inputs, session.OutputNames);
            foreach (var v in inputs.Values) v.Dispose();
            var names = session.OutputNames.ToList();
            for (var k = 0; k < specs.Length; k++)
            {
                p[k] = outputs[names.IndexOf(specs[k].Name + ".out")].GetTensorDataAsSpan<float>().ToArray();
                for (var s = 0; s < suffixes.Count; s++)
                    states[s][k] = outputs[names.IndexOf(specs[k].Name + suffixes[s] + ".out")].GetTensorDataAsSpan<float>().ToArray();
            }
        }
        return (p.Select(a => Array.ConvertAll(a, x => (double)x)).ToArray(),
            states.Select(s => s.Select(a => Array.ConvertAll(a, x => (double)x)).ToArray()).ToArray());
    }

    private static double[][] Random(Random rng, double scale) => [
        Enumerable.Range(0, 6).Select(_ => (rng.NextDouble() * 2 - 1) * scale).ToArray(),
        Enumerable.Range(0, 3).Select(_ => (rng.NextDouble() * 2 - 1) * scale).ToArray()];

    private static void AssertClose(double[][] expected, double[][] actual, double tol = 2e-6)
    {
        for (var k = 0; k < expected.Length; k++)
            for (var i = 0; i < expected[k].Length; i++)
            {
                var e = expected[k][i];
                var a = actual[k][i];
                Assert.True(Math.Abs(e - a) <= tol * (1 + Math.Abs(e)), $"tensor {k} element {i}: expected {e:R}, got {a:R}");
            }
    }

    private static double[][] Clone(double[][] x) => x.Select(a => (double[])a.Clone()).ToArray();

    [Fact]
    public void AdamW_first_step_matches_hand_computed_value()
    {
        // p=1, g=0.5, lr=0.1, wd=0.01: p→0.999; m=0.05, v=2.5e-4; step_size=0.1/0.1=1; denom=0.5+1e-8 → p=0.899.
        var spec = new OptimizerSpec { Kind = OptimizerKind.AdamW, WeightDecay = 0.01 };
        var (p, states) = RunGraph(spec, [[1.0]], _ => [[0.5]], 1, _ => 0.1, [new("p", "float", ["1"])]);
        Assert.Equal(0.899, p[0][0], 6);
        Assert.Equal(0.05, states[0][0][0], 7);
        Assert.Equal(2.5e-4, states[1][0][0], 9);
    }

    [Theory]
    [InlineData(0.01, 0.9, 0.999, 1e-8)]
    [InlineData(0.1, 0.8, 0.99, 1e-6)]
    [InlineData(0.0, 0.9, 0.999, 1e-8)]
    public void AdamW_several_steps_match_reference(double wd, double b1, double b2, double eps)
    {
        var rng = new Random(7);
        var p0 = Random(rng, 1);
        var grads = Enumerable.Range(0, 6).Select(_ => Random(rng, 0.5)).ToArray();
        var spec = new OptimizerSpec { Kind = OptimizerKind.AdamW, WeightDecay = wd, Beta1 = b1, Beta2 = b2, Epsilon = eps };
        double Lr(long t) => 1e-2 / t;
        var (p, states) = RunGraph(spec, p0, t => grads[t - 1], 6, Lr);

        var rp = Clone(p0);
        var m = p0.Select(a => new double[a.Length]).ToArray();
        var v = p0.Select(a => new double[a.Length]).ToArray();
        for (var t = 1; t <= 6; t++)
            ReferenceOptimizers.AdamW(rp, grads[t - 1], m, v, t, (float)Lr(t), b1, b2, eps, wd);
        AssertClose(rp, p);
        AssertClose(m, states[0]);
        AssertClose(v, states[1]);
    }

    [Fact]
    public void Sgd_momentum_dampening_weight_decay_match_hand_computed_values()
    {
        // step 1: g'=0.5+0.01·1=0.51, buf=0.51, p=1-0.051=0.949;
        // step 2: g'=0.5+0.01·0.949=0.50949, buf=0.9·0.51+0.9·0.50949=0.917541, p=0.949-0.0917541=0.8572459.
        var spec = new OptimizerSpec { Kind = OptimizerKind.Sgd, Momentum = 0.9, Dampening = 0.1, WeightDecay = 0.01 };
        var (p, states) = RunGraph(spec, [[1.0]], _ => [[0.5]], 2, _ => 0.1, [new("p", "float", ["1"])]);
        Assert.Equal(0.8572459, p[0][0], 6);
        Assert.Equal(0.917541, states[0][0][0], 6);
    }

    [Theory]
    [InlineData(0.0, 0.0, false, 0.0)]
    [InlineData(0.0, 0.0, false, 0.05)]
    [InlineData(0.9, 0.0, false, 0.0)]
    [InlineData(0.9, 0.3, false, 0.01)]
    [InlineData(0.9, 0.0, true, 0.01)]
    public void Sgd_several_steps_match_reference(double momentum, double dampening, bool nesterov, double wd)
    {
        var rng = new Random(11);
        var p0 = Random(rng, 1);
        var grads = Enumerable.Range(0, 5).Select(_ => Random(rng, 0.5)).ToArray();
        var spec = new OptimizerSpec { Kind = OptimizerKind.Sgd, Momentum = momentum, Dampening = dampening, Nesterov = nesterov, WeightDecay = wd };
        var (p, states) = RunGraph(spec, p0, t => grads[t - 1], 5, _ => 0.05);
        var rp = Clone(p0);
        var buf = p0.Select(a => new double[a.Length]).ToArray();
        for (var t = 1; t <= 5; t++)
            ReferenceOptimizers.Sgd(rp, grads[t - 1], buf, t, (float)0.05, momentum, dampening, nesterov, wd);
        AssertClose(rp, p);
        if (momentum != 0) AssertClose(buf, states[0]);
        else Assert.Empty(states);
    }

    [Theory]
    [InlineData(0.1)]   // clips
    [InlineData(100.0)] // coefficient clamps to 1
    public void Clipping_scales_gradients_by_global_norm_before_the_update(double maxNorm)
    {
        var rng = new Random(3);
        var p0 = Random(rng, 1);
        var grads = Enumerable.Range(0, 3).Select(_ => Random(rng, 2)).ToArray();
        // OptimizerSpec's WeightDecay default (0.01) is AdamW's; PyTorch SGD's default is 0.
        var spec = new OptimizerSpec { Kind = OptimizerKind.Sgd, Momentum = 0.9, WeightDecay = 0, MaxGradNorm = maxNorm };
        var (p, _) = RunGraph(spec, p0, t => grads[t - 1], 3, _ => 0.1);
        var rp = Clone(p0);
        var buf = p0.Select(a => new double[a.Length]).ToArray();
        for (var t = 1; t <= 3; t++)
        {
            var g = Clone(grads[t - 1]);
            var norm = ReferenceOptimizers.ClipGradNorm(g, maxNorm);
            if (maxNorm == 0.1) Assert.True(norm > maxNorm);
            ReferenceOptimizers.Sgd(rp, g, buf, t, (float)0.1, 0.9);
        }
        AssertClose(rp, p, 5e-6);
    }

    [Fact]
    public void AdamW_with_clipping_and_double_parameters_matches_reference()
    {
        var rng = new Random(5);
        var p0 = Random(rng, 1);
        var grads = Enumerable.Range(0, 4).Select(_ => Random(rng, 3)).ToArray();
        TensorSpec[] doubles = [new("w", "double", ["2", "3"]), new("b", "double", ["3"])];
        var spec = new OptimizerSpec { Kind = OptimizerKind.AdamW, MaxGradNorm = 1.0 };
        var model = OptimizerGraphBuilder.Build(doubles, spec);
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        var p = Clone(p0);
        var m = p0.Select(a => new double[a.Length]).ToArray();
        var v = p0.Select(a => new double[a.Length]).ToArray();
        var rp = Clone(p0);
        var rm = p0.Select(a => new double[a.Length]).ToArray();
        var rv = p0.Select(a => new double[a.Length]).ToArray();
        for (var t = 1; t <= 4; t++)
        {
            var inputs = new Dictionary<string, OrtValue>
            {
                ["learning_rate"] = OrtValue.CreateTensorValueFromMemory(new[] { 0.01f }, []),
                ["step"] = OrtValue.CreateTensorValueFromMemory(new[] { (long)t }, []),
            };
            for (var k = 0; k < 2; k++)
            {
                var shape = doubles[k].FixedDims;
                inputs[doubles[k].Name] = OrtValue.CreateTensorValueFromMemory(p[k], shape);
                inputs[doubles[k].Name + ".grad"] = OrtValue.CreateTensorValueFromMemory((double[])grads[t - 1][k].Clone(), shape);
                inputs[doubles[k].Name + ".exp_avg"] = OrtValue.CreateTensorValueFromMemory(m[k], shape);
                inputs[doubles[k].Name + ".exp_avg_sq"] = OrtValue.CreateTensorValueFromMemory(v[k], shape);
            }
            using var outputs = session.Run(new RunOptions(), inputs, session.OutputNames);
            foreach (var x in inputs.Values) x.Dispose();
            var names = session.OutputNames.ToList();
            for (var k = 0; k < 2; k++)
            {
                p[k] = outputs[names.IndexOf(doubles[k].Name + ".out")].GetTensorDataAsSpan<double>().ToArray();
                m[k] = outputs[names.IndexOf(doubles[k].Name + ".exp_avg.out")].GetTensorDataAsSpan<double>().ToArray();
                v[k] = outputs[names.IndexOf(doubles[k].Name + ".exp_avg_sq.out")].GetTensorDataAsSpan<double>().ToArray();
            }
            var g = Clone(grads[t - 1]);
            ReferenceOptimizers.ClipGradNorm(g, 1.0);
            ReferenceOptimizers.AdamW(rp, g, rm, rv, t, 0.01f);
        }
        // The norm itself is computed in float32 (as torch does for float32 grads); the update is float64.
        AssertClose(rp, p, 1e-6);
    }

    [Fact]
    public void Graph_has_the_contract_inputs_and_outputs_in_order()
    {
        var model = OptimizerGraphBuilder.Build(Params, new OptimizerSpec { Kind = OptimizerKind.AdamW }, 18);
        Assert.Equal(["learning_rate", "step", "w", "w.grad", "w.exp_avg", "w.exp_avg_sq", "b", "b.grad", "b.exp_avg", "b.exp_avg_sq"],
            model.Graph.Input.Select(i => i.Name));
        Assert.Equal(["w.out", "w.exp_avg.out", "w.exp_avg_sq.out", "b.out", "b.exp_avg.out", "b.exp_avg_sq.out"], model.Graph.Output.Select(o => o.Name));
        Assert.Equal(18, model.OpsetImport.Single().Version);
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        Assert.Equal(10, session.InputNames.Count);
    }

    [Fact]
    public void Invalid_settings_are_refused_with_the_field_named()
    {
        Assert.Contains("beta parameter at index 0",
            Assert.ThrowsAny<OnnxTuneException>(() => OptimizerGraphBuilder.Build(Params, new OptimizerSpec { Beta1 = 1.0 })).Message);
        Assert.Contains("Nesterov",
            Assert.ThrowsAny<OnnxTuneException>(() => OptimizerGraphBuilder.Build(Params, new OptimizerSpec { Kind = OptimizerKind.Sgd, Nesterov = true })).Message);
        Assert.Contains("'v'",
            Assert.ThrowsAny<OnnxTuneException>(() => OptimizerGraphBuilder.Build([new TensorSpec("v", "float", ["batch"])], new OptimizerSpec())).Message);
        Assert.Contains("int64",
            Assert.ThrowsAny<OnnxTuneException>(() => OptimizerGraphBuilder.Build([new TensorSpec("i", "int64", ["2"])], new OptimizerSpec())).Message);
        Assert.Throws<UnsupportedModelException>(() => OptimizerGraphBuilder.Build(Params, new OptimizerSpec(), 12));
    }
}
