using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Models;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Optimizers;

/// <summary>Per-parameter learning-rate factors (PyTorch parameter groups) in the fused optimizer.</summary>
public sealed class LearningRateScaleTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Artifacts(OptimizerKind kind)
    {
        var path = _dir.Combine(Guid.NewGuid().ToString("N"));
        GeneratedArtifacts.Create(new MlpModelBuilder(6).Layer(8).Layer(3).Build(seed: 2), new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
            Optimizer = new OptimizerSpec { Kind = kind, LearningRate = 0.05, Momentum = kind == OptimizerKind.Sgd ? 0.9 : 0, WeightDecay = 0.01 },
        }, path);
        return path;
    }

    private static TrainingBatch Batch(int seed)
    {
        var rng = new Random(seed);
        return new TrainingBatch()
            .Add("features", Enumerable.Range(0, 4 * 6).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), 4, 6)
            .WithLabels(Enumerable.Range(0, 4).Select(_ => (long)rng.Next(3)).ToArray(), 4);
    }

    private static void Train(TrainingEngine s, int steps)
    {
        for (var i = 0; i < steps; i++)
        {
            s.TrainStep(Batch(i));
            s.OptimizerStep();
        }
    }

    [Theory]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Sgd)]
    public void A_factor_on_every_parameter_equals_the_scaled_learning_rate_bit_for_bit(OptimizerKind kind)
    {
        var dir = Artifacts(kind);
        using var scaled = TrainingEngine.Open(dir, new TrainingEngineOptions { LearningRateScales = new Dictionary<string, double> { ["*"] = 0.25 } });
        using var plain = TrainingEngine.Open(dir);
        plain.LearningRate = scaled.LearningRate * 0.25;
        Train(scaled, 4);
        Train(plain, 4);
        foreach (var name in plain.ParameterNames)
            Assert.Equal(plain.GetParameter(name), scaled.GetParameter(name));
    }

    [Fact]
    public void A_factor_applies_only_to_matching_parameters_and_zero_freezes_them()
    {
        var dir = Artifacts(OptimizerKind.AdamW);
        using var start = TrainingEngine.Open(dir);
        var first = start.ParameterNames[0];
        using var s = TrainingEngine.Open(dir, new TrainingEngineOptions { LearningRateScales = new Dictionary<string, double> { [first] = 0 } });
        Train(s, 3);
        Assert.Equal(start.GetParameter(first), s.GetParameter(first)); // factor 0: no step and no weight decay
        foreach (var name in s.ParameterNames.Skip(1))
            Assert.NotEqual(start.GetParameter(name), s.GetParameter(name));
    }

    [Fact]
    public void Bad_factors_and_the_optimizer_graph_are_typed_errors()
    {
        var dir = Artifacts(OptimizerKind.AdamW);
        Assert.Contains("matches no trainable parameter", Assert.Throws<TrainingOptionsException>(() =>
            TrainingEngine.Open(dir, new TrainingEngineOptions { LearningRateScales = new Dictionary<string, double> { ["encoder.*"] = 0.1 } })).Message);
        Assert.Throws<TrainingOptionsException>(() =>
            TrainingEngine.Open(dir, new TrainingEngineOptions { LearningRateScales = new Dictionary<string, double> { ["*"] = double.NaN } }));
        Assert.Contains("fused CPU optimizer", Assert.Throws<TrainingOptionsException>(() =>
            TrainingEngine.Open(dir, new TrainingEngineOptions { OptimizerExecution = OptimizerExecution.Graph, LearningRateScales = new Dictionary<string, double> { ["*"] = 0.5 } })).Message);
    }
}
