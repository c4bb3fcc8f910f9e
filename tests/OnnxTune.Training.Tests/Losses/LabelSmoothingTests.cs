using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Models;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using OnnxTune.Training.Tests.TestUtilities;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Training.Tests.Losses;

/// <summary>
/// Cross-entropy with PyTorch's <c>label_smoothing</c>: per target (1 − ε)·(−log p_y) + (ε/C)·Σ_c (−log p_c), averaged over
/// the targets that are not ignored (or weighted by the sample weights).
/// </summary>
public sealed class LabelSmoothingTests : IDisposable
{
    private const int Input = 6, Classes = 5, N = 6;
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static LossSpec Smoothed(double eps, long? ignore = -100, string? weights = null) =>
        new() { Kind = LossKind.CrossEntropy, OutputName = "logits", LabelSmoothing = eps, IgnoreIndex = ignore, SampleWeightName = weights };

    private string Artifacts(ModelProto model, LossSpec loss, string name)
    {
        var path = _dir.Combine(name);
        GeneratedArtifacts.Create(model, new ArtifactOptions
        {
            Loss = loss,
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.1, WeightDecay = 0 },
        }, path);
        return path;
    }

    private static ModelProto Mlp(int seed = 3) => new MlpModelBuilder(Input).Layer(8).Layer(Classes).Build(seed);

    private static (float[] X, long[] Y) Data(int seed, int rows = N)
    {
        var rng = new Random(seed);
        var x = Enumerable.Range(0, rows * Input).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var y = Enumerable.Range(0, rows).Select(_ => (long)rng.Next(Classes)).ToArray();
        return (x, y);
    }

    // PyTorch's F.cross_entropy(logits, y, label_smoothing=eps, ignore_index=-100) per target; null for an ignored one.
    private static double? Reference(ReadOnlySpan<float> row, long label, double eps)
    {
        if (label == -100) return null;
        var v = row.ToArray().Select(f => (double)f).ToArray();
        var max = v.Max();
        var lse = max + Math.Log(v.Sum(e => Math.Exp(e - max)));
        var nll = lse - v[label];
        var uniform = v.Sum(e => lse - e) / v.Length;
        return (1 - eps) * nll + eps * uniform;
    }

    [Theory]
    [InlineData(0.1)]
    [InlineData(0.5)]
    [InlineData(1.0)]
    public void Loss_is_pytorchs_smoothed_mean_over_the_targets_that_count(double eps)
    {
        var (x, y) = Data(1);
        y[2] = -100;
        using var session = TrainingEngine.Open(Artifacts(Mlp(), Smoothed(eps), $"s{eps}"));
        var eval = session.EvalStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N));
        var logits = eval.Outputs["logits"].AsFloats();
        var terms = Enumerable.Range(0, N).Select(i => Reference(logits.AsSpan(i * Classes, Classes), y[i], eps)).OfType<double>().ToArray();
        Assert.Equal(terms.Average(), eval.Loss, 5);

        using var plain = TrainingEngine.Open(Artifacts(Mlp(), Smoothed(0), "plain"));
        var unsmoothed = plain.EvalStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N)).Loss;
        Assert.NotEqual(unsmoothed, eval.Loss, 3);
    }

    [Fact]
    public void Sample_weights_weight_the_smoothed_per_target_loss()
    {
        var (x, y) = Data(2);
        y[4] = -100;
        var w = new[] { 0.5f, 2f, 0f, 1f, 3f, 1f };
        using var session = TrainingEngine.Open(Artifacts(Mlp(), Smoothed(0.2, weights: "sample_weights"), "w"));
        var logits = session.EvalStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N)).Outputs["logits"].AsFloats();
        double num = 0, den = 0;
        for (var i = 0; i < N; i++)
        {
            if (Reference(logits.AsSpan(i * Classes, Classes), y[i], 0.2) is not { } l) continue;
            num += w[i] * l;
            den += w[i];
        }
        var loss = session.TrainStep(new TrainingBatch().Add("features", x, N, Input).WithLabels(y, N).WithSampleWeights(w, N));
        Assert.Equal(num / den, loss, 5);
    }

    [Fact]
    public void Smoothed_gradients_match_finite_differences()
    {
        var (x, y) = Data(4);
        y[1] = -100;
        var report = GradientChecker.Check(Mlp(seed: 5), new GradientCheckOptions
        {
            Loss = Smoothed(0.3),
            Inputs = new Dictionary<string, (Array, long[])> { ["features"] = (x, [N, Input]), ["labels"] = (y, [N]) },
        });
        Assert.True(report.Passed, string.Join("; ", report.Parameters.Select(p => $"{p.Name}: {p.MaxRelativeError:E2}")));
    }

    [Fact]
    public void Smoothed_weighted_and_distilled_gradients_match_finite_differences()
    {
        var (x, y) = Data(5);
        y[3] = -100;
        var rng = new Random(8);
        var teacher = Enumerable.Range(0, N * Classes).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var report = GradientChecker.Check(Mlp(seed: 6), new GradientCheckOptions
        {
            Loss = Smoothed(0.1, weights: "sample_weights") with { DistillationTargetName = "teacher_logits", DistillationWeightName = "distillation_weights" },
            Inputs = new Dictionary<string, (Array, long[])>
            {
                ["features"] = (x, [N, Input]),
                ["labels"] = (y, [N]),
                ["sample_weights"] = (new[] { 0.5f, 4f, 0f, 1f, 3f, 1f }, [N]),
                ["teacher_logits"] = (teacher, [N, Classes]),
                ["distillation_weights"] = (new[] { 1f, 0f, 0.5f, 2f, 1f, 1f }, [N]),
            },
        });
        Assert.True(report.Passed, string.Join("; ", report.Parameters.Select(p => $"{p.Name}: {p.MaxRelativeError:E2}")));
    }

    // features [batch, 3, Input] -> logits [batch, 3, Classes]: per-token scores, classes on the last dim.
    private static ModelProto PerToken()
    {
        var rng = new Random(11);
        var model = new ModelProto { IrVersion = 8, Graph = new GraphProto { Name = "per_token" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var editor = new GraphEditor(model.Graph);
        editor.Reserve("features");
        editor.AddInput(ValueInfos.Tensor("features", DataType.Float, "batch", 3L, (long)Input));
        var w = editor.AddInitializer(TensorProtos.Float("proj.weight", Enumerable.Range(0, Input * Classes).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), Input, Classes), makeUnique: false);
        var b = editor.AddInitializer(TensorProtos.Float("proj.bias", Enumerable.Range(0, Classes).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), Classes), makeUnique: false);
        editor.AddNode("Add", [editor.Add("MatMul", ["features", w], "proj"), b], [editor.Reserve("logits")]);
        model.Graph.Output.Add(ValueInfos.Tensor("logits", DataType.Float, "batch", 3L, (long)Classes));
        return model;
    }

    [Fact]
    public void Per_token_scores_smooth_over_the_class_dim()
    {
        var rng = new Random(12);
        const int batch = 2, tokens = 3;
        var x = Enumerable.Range(0, batch * tokens * Input).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        long[] y = [1, 4, -100, 0, -100, 2];
        using var session = TrainingEngine.Open(Artifacts(PerToken(), Smoothed(0.25), "tok"));
        var eval = session.EvalStep(new TrainingBatch().Add("features", x, batch, tokens, Input).WithLabels(y, batch, tokens));
        var logits = eval.Outputs["logits"].AsFloats();
        var terms = Enumerable.Range(0, batch * tokens).Select(i => Reference(logits.AsSpan(i * Classes, Classes), y[i], 0.25)).OfType<double>().ToArray();
        Assert.Equal(4, terms.Length);
        Assert.Equal(terms.Average(), eval.Loss, 5);

        var report = GradientChecker.Check(PerToken(), new GradientCheckOptions
        {
            Loss = Smoothed(0.25),
            Inputs = new Dictionary<string, (Array, long[])> { ["features"] = (x, [batch, tokens, Input]), ["labels"] = (y, [batch, tokens]) },
        });
        Assert.True(report.Passed, string.Join("; ", report.Parameters.Select(p => $"{p.Name}: {p.MaxRelativeError:E2}")));
    }

    [Theory]
    [InlineData(-0.1)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    public void Smoothing_outside_zero_to_one_is_a_typed_error(double eps)
    {
        var e = Assert.ThrowsAny<OnnxTuneException>(() => Artifacts(Mlp(), Smoothed(eps), "bad"));
        Assert.Contains("LabelSmoothing", e.Message);
    }

    [Fact]
    public void Smoothing_on_a_loss_other_than_cross_entropy_is_a_typed_error()
    {
        var e = Assert.ThrowsAny<OnnxTuneException>(() =>
            Artifacts(Mlp(), new LossSpec { Kind = LossKind.Mse, OutputName = "logits", LabelSmoothing = 0.1 }, "mse"));
        Assert.Contains("cross-entropy", e.Message);
    }
}
