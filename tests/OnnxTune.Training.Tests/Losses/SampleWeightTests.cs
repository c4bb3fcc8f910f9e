using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Models;
using OnnxTune.Training.GradientChecking;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Losses;

/// <summary>Cross-entropy with per-example weights: Σ w·l / Σ w, as PyTorch's reduction='none' then a weighted mean.</summary>
public sealed class SampleWeightTests : IDisposable
{
    private const int Input = 6, Classes = 4, N = 5;
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static LossSpec Weighted(long? ignore = null) => new() { Kind = LossKind.CrossEntropy, OutputName = "logits", SampleWeightName = "sample_weights", IgnoreIndex = ignore };

    private string Artifacts(LossSpec loss, string name)
    {
        var path = _dir.Combine(name);
        GeneratedArtifacts.Create(new MlpModelBuilder(Input).Layer(8).Layer(Classes).Build(seed: 3), new ArtifactOptions
        {
            Loss = loss,
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.1, WeightDecay = 0 },
        }, path);
        return path;
    }

    private static (float[] X, long[] Y) Data(int seed)
    {
        var rng = new Random(seed);
        var x = Enumerable.Range(0, N * Input).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var y = Enumerable.Range(0, N).Select(_ => (long)rng.Next(Classes)).ToArray();
        return (x, y);
    }

    [Fact]
    public void Weighted_loss_is_the_weighted_mean_of_per_example_cross_entropy()
    {
        using var session = TrainingEngine.Open(Artifacts(Weighted(), "w"));
        var (x, y) = Data(1);
        var w = new[] { 0.5f, 2f, 0f, 1f, 3f };
        var eval = session.EvalStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N));
        var logits = eval.Outputs["logits"].AsFloats();
        double num = 0, den = 0;
        for (var i = 0; i < N; i++)
        {
            var row = logits.AsSpan(i * Classes, Classes);
            var max = row.ToArray().Max();
            var lse = max + Math.Log(row.ToArray().Sum(v => Math.Exp(v - max)));
            num += w[i] * (lse - row[(int)y[i]]);
            den += w[i];
        }
        var loss = session.TrainStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N).WithSampleWeights(w, N));
        Assert.Equal(num / den, loss, 5);
        // Without weights every example counts once: the plain mean, as the unweighted artifacts compute it.
        var plain = session.EvalStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N)).Loss;
        using var unweighted = TrainingEngine.Open(Artifacts(new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" }, "u"));
        Assert.Equal(unweighted.EvalStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N)).Loss, plain, 5);
    }

    [Fact]
    public void Weight_two_trains_like_the_example_given_twice()
    {
        var (x, y) = Data(2);
        using var weighted = TrainingEngine.Open(Artifacts(Weighted(), "w"));
        weighted.TrainStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N).WithSampleWeights(new[] { 2f, 1f, 1f, 1f, 1f }, N));
        weighted.OptimizerStep();

        using var duplicated = TrainingEngine.Open(Artifacts(Weighted(), "d"));
        var x2 = x.Take(Input).Concat(x).ToArray();
        var y2 = new[] { y[0] }.Concat(y).ToArray();
        duplicated.TrainStep(new TrainingBatch().Add("features", x2, N + 1, Input).WithLabels(y2, N + 1));
        duplicated.OptimizerStep();

        foreach (var name in weighted.ParameterNames)
        {
            var a = weighted.GetParameter(name);
            var b = duplicated.GetParameter(name);
            for (var i = 0; i < a.Length; i++) Assert.Equal(b[i], a[i], 5);
        }
    }

    [Fact]
    public void Negative_weights_are_a_typed_error_naming_the_input()
    {
        using var session = TrainingEngine.Open(Artifacts(Weighted(), "w"));
        var (x, y) = Data(3);
        var e = Assert.Throws<BatchValidationException>(() =>
            session.TrainStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N).WithSampleWeights(new[] { 1f, -1f, 1f, 1f, 1f }, N)));
        Assert.Contains("sample_weights", e.Message);
    }

    [Fact]
    public void Weighted_cross_entropy_gradients_match_finite_differences()
    {
        var (x, y) = Data(4);
        y[1] = -100; // an ignored target: its weight must leave the denominator
        var report = GradientChecker.Check(new MlpModelBuilder(Input).Layer(8).Layer(Classes).Build(seed: 5), new GradientCheckOptions
        {
            Loss = Weighted(ignore: -100),
            Inputs = new Dictionary<string, (Array, long[])>
            {
                ["features"] = (x, [N, Input]),
                ["labels"] = (y, [N]),
                ["sample_weights"] = (new[] { 0.5f, 4f, 0f, 1f, 3f }, [N]),
            },
        });
        Assert.True(report.Passed, string.Join("; ", report.Parameters.Select(p => $"{p.Name}: {p.MaxRelativeError:E2}")));
    }

    private static LossSpec Distilled() => Weighted() with { DistillationTargetName = "teacher_logits", DistillationWeightName = "distillation_weights", DistillationTemperature = 2.0 };

    [Fact]
    public void Distillation_adds_the_temperature_scaled_kl_to_the_teacher()
    {
        using var session = TrainingEngine.Open(Artifacts(Distilled(), "kd"));
        var (x, y) = Data(6);
        var rng = new Random(9);
        var teacher = Enumerable.Range(0, N * Classes).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var a = new[] { 1f, 0f, 0.5f, 2f, 1f };
        var plain = session.EvalStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N));
        var logits = plain.Outputs["logits"].AsFloats();
        const double T = 2.0;
        static double[] LogSoftmax(ReadOnlySpan<float> v, double t)
        {
            var s = v.ToArray().Select(e => e / t).ToArray();
            var max = s.Max();
            var lse = max + Math.Log(s.Sum(e => Math.Exp(e - max)));
            return s.Select(e => e - lse).ToArray();
        }
        double kd = 0;
        for (var i = 0; i < N; i++)
        {
            var ls = LogSoftmax(logits.AsSpan(i * Classes, Classes), T);
            var lt = LogSoftmax(teacher.AsSpan(i * Classes, Classes), T);
            kd += a[i] * lt.Select((l, c) => Math.Exp(l) * (l - ls[c])).Sum();
        }
        kd = kd / N * T * T;
        var loss = session.TrainStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N).WithDistillation(teacher, a, N, Classes));
        Assert.Equal(plain.Loss + kd, loss, 5);
    }

    [Fact]
    public void Distillation_gradients_match_finite_differences()
    {
        var report = GradientChecker.Check(new MlpModelBuilder(Input).Layer(8).Layer(Classes).Build(seed: 7), new GradientCheckOptions
        {
            Loss = Distilled(),
            DimValues = new Dictionary<string, long> { ["batch"] = N },
            Seed = 3,
        });
        Assert.True(report.Passed, string.Join("; ", report.Parameters.Select(p => $"{p.Name}: {p.MaxRelativeError:E2}")));
    }
}
