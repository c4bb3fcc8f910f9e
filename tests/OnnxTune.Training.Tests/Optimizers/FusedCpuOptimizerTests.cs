using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Models;
using OnnxTune.Training.Optimizers;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Optimizers;

/// <summary>The fused CPU optimizer against the optimizer graph it replaces, and against PyTorch's definitions.</summary>
public sealed class FusedCpuOptimizerTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string> Specs => ["adamw", "adamw-no-decay-clip", "sgd", "sgd-momentum-nesterov-clip", "sgd-dampening"];

    private static OptimizerSpec Spec(string name) => name switch
    {
        "adamw" => new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 1e-2, WeightDecay = 0.01 },
        "adamw-no-decay-clip" => new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 3e-3, WeightDecay = 0, Beta1 = 0.8, Beta2 = 0.99, Epsilon = 1e-6, MaxGradNorm = 0.05 },
        "sgd" => new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.05, WeightDecay = 0 },
        "sgd-momentum-nesterov-clip" => new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.05, Momentum = 0.9, Nesterov = true, WeightDecay = 1e-3, MaxGradNorm = 0.1 },
        "sgd-dampening" => new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.05, Momentum = 0.5, Dampening = 0.3, WeightDecay = 1e-2 },
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    // 600×512 = 307,200 weights: above the fused optimizer's threshold for splitting the update across threads.
    private const int Input = 600, Hidden = 512, Classes = 7;

    private string Artifacts(OptimizerSpec spec)
    {
        var path = _dir.Combine(Guid.NewGuid().ToString("N"));
        GeneratedArtifacts.Create(new MlpModelBuilder(Input).Layer(Hidden).Layer(Classes).Build(seed: 3), new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
            Optimizer = spec,
        }, path);
        return path;
    }

    private static TrainingBatch Batch(int seed)
    {
        var rng = new Random(seed);
        var x = Enumerable.Range(0, 5 * Input).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var y = Enumerable.Range(0, 5).Select(_ => (long)rng.Next(Classes)).ToArray();
        return new TrainingBatch().Add("features", x, 5, Input).WithLabels(y, 5);
    }

    // Updates, an accumulated update (two train steps), a learning-rate change, then more updates.
    private static void Train(TrainingEngine s)
    {
        s.TrainStep(Batch(1)); s.OptimizerStep();
        s.TrainStep(Batch(2)); s.TrainStep(Batch(3)); s.OptimizerStep();
        s.LearningRate *= 0.5;
        for (var i = 4; i < 7; i++) { s.TrainStep(Batch(i)); s.OptimizerStep(); }
    }

    [Theory]
    [MemberData(nameof(Specs))]
    public void Fused_update_equals_the_optimizer_graph(string name)
    {
        var spec = Spec(name);
        var dir = Artifacts(spec);
        using var graph = TrainingEngine.Open(dir, new TrainingEngineOptions { OptimizerExecution = OptimizerExecution.Graph, IntraOpThreads = 2 });
        using var fused = TrainingEngine.Open(dir, new TrainingEngineOptions { OptimizerExecution = OptimizerExecution.Fused, IntraOpThreads = 2 });
        Assert.Equal(OptimizerExecution.Graph, graph.OptimizerExecution);
        Assert.Equal(OptimizerExecution.Fused, fused.OptimizerExecution);
        Train(graph);
        Train(fused);
        // Same float operations in the same order: equal to the bit, except the clip norm (summation order).
        var tolerance = spec.MaxGradNorm is null ? 0 : 1e-4;
        foreach (var p in graph.ParameterNames)
        {
            AssertClose(graph.GetParameter(p), fused.GetParameter(p), tolerance, p);
            foreach (var suffix in spec.StateSuffixes)
                AssertClose(graph.GetOptimizerState(p + suffix), fused.GetOptimizerState(p + suffix), tolerance, p + suffix);
        }
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance, string name)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = 0.0;
        var at = -1;
        for (var i = 0; i < expected.Length; i++)
        {
            var d = Math.Abs(expected[i] - actual[i]) / (1e-3 + Math.Abs(expected[i]));
            if (d > worst) { worst = d; at = i; }
        }
        Assert.True(worst <= tolerance, $"{name}[{at}]: graph {(at >= 0 ? expected[at] : 0):R}, fused {(at >= 0 ? actual[at] : 0):R} (relative {worst:E2} > {tolerance:E0})");
    }

    [Fact]
    public void Auto_picks_fused_on_the_cpu_and_graph_for_optimizer_graphs_it_does_not_know()
    {
        using (var s = TrainingEngine.Open(Artifacts(Spec("adamw"))))
            Assert.Equal(OptimizerExecution.Fused, s.OptimizerExecution);
        // A custom optimizer graph (here: OnnxTune's without its signature) is run as a graph.
        var handWritten = Artifacts(Spec("adamw"));
        var optimizerPath = Path.Combine(handWritten, new ArtifactFiles().OptimizerModel);
        var optimizer = OnnxModelReader.Load(optimizerPath);
        optimizer.MetadataProps.Clear();
        OnnxModelWriter.Save(optimizer, optimizerPath);
        using (var s = TrainingEngine.Open(handWritten))
            Assert.Equal(OptimizerExecution.Graph, s.OptimizerExecution);
        var e = Assert.Throws<InvalidArtifactsException>(() => TrainingEngine.Open(handWritten, new TrainingEngineOptions { OptimizerExecution = OptimizerExecution.Fused }));
        Assert.Contains("onnxtune.optimizer", e.Message);
    }

    [Fact]
    public void Fused_refuses_an_optimizer_graph_whose_signature_differs_from_the_manifest()
    {
        var dir = Artifacts(Spec("adamw"));
        var manifest = ArtifactManifest.Load(dir);
        (manifest with { Optimizer = manifest.Optimizer with { Beta2 = 0.98 } }).Save(dir);
        var e = Assert.Throws<InvalidArtifactsException>(() => TrainingEngine.Open(dir, new TrainingEngineOptions { OptimizerExecution = OptimizerExecution.Fused }));
        Assert.Contains("beta2=0.98", e.Message);
        using var s = TrainingEngine.Open(dir);
        Assert.Equal(OptimizerExecution.Graph, s.OptimizerExecution);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Double_parameters_follow_pytorch_adamw(int threads)
    {
        // Float64 parameters (GradientChecker-style artifacts) take the same kernel; checked against the float64 reference.
        const int n = 300_001;
        using var store = new TensorStore([("w", TensorElementType.Double, [n])], [".exp_avg", ".exp_avg_sq"]);
        var slot = store.Slots[0];
        var rng = new Random(5);
        var p = Enumerable.Range(0, n).Select(_ => rng.NextDouble() - 0.5).ToArray();
        p.CopyTo(slot.Values[0].GetTensorMutableDataAsSpan<double>());
        var spec = new OptimizerSpec { Kind = OptimizerKind.AdamW, WeightDecay = 0.1 };
        using var fused = new FusedCpuOptimizer(spec, store.Slots, threads);
        Assert.Equal(threads, fused.Threads);
        double[][] rp = [p.ToArray()], rm = [new double[n]], rv = [new double[n]];
        for (var step = 1; step <= 3; step++)
        {
            var g = Enumerable.Range(0, n).Select(_ => rng.NextDouble() - 0.5).ToArray();
            g.CopyTo(slot.Gradients[0].GetTensorMutableDataAsSpan<double>());
            fused.Step(0, 0, 1e-2f, step);
            ReferenceOptimizers.AdamW(rp, [g], rm, rv, step, (double)1e-2f, wd: 0.1);
        }
        // In place: parity 0 holds the result, parity 1 was never touched.
        var result = slot.Values[0].GetTensorDataAsSpan<double>();
        var m = slot.States[0].Values[0].GetTensorDataAsSpan<double>();
        Assert.All(slot.Values[1].GetTensorDataAsSpan<double>().ToArray(), v => Assert.Equal(0, v));
        for (var i = 0; i < n; i += 997)
        {
            Assert.Equal(rp[0][i], result[i], 12);
            Assert.Equal(rm[0][i], m[i], 12);
        }
    }
}
