using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Models;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Training.Tests.Artifacts;

public sealed class ArtifactGeneratorTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxtune-gen-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void Writes_every_file_and_an_initial_checkpoint_holding_the_model_weights()
    {
        var model = new MlpModelBuilder(6).Layer(5).Layer(3).Build(seed: 3);
        var artifacts = ArtifactGenerator.Generate(model, new ArtifactOptions { Selection = new ParameterSelection { Frozen = ["fc1.*"] } }, _dir);

        foreach (var file in new[] { "training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "inference_model.onnx", "manifest.json" })
            Assert.True(File.Exists(Path.Combine(_dir, file)), file);
        Assert.True(CheckpointStore.Exists(Path.Combine(_dir, "checkpoint")));
        Assert.Equal(["fc2.weight", "fc2.bias"], artifacts.Manifest.TrainableParameters.Select(p => p.Name));

        var (metadata, tensors) = CheckpointStore.Load(Path.Combine(_dir, "checkpoint"));
        Assert.Equal(0, metadata.Step);
        using var session = TrainingEngine.Open(_dir);
        var expected = TensorProtos.ToFloatArray(model.Graph.Initializer.First(t => t.Name == "fc2.weight"));
        Assert.Equal(expected, session.GetParameter("fc2.weight"));
        Assert.All(session.GetOptimizerState("fc2.weight.exp_avg"), v => Assert.Equal(0f, v));
        Assert.Equal(Path.GetFullPath(_dir), metadata.UserProperties[ArtifactGenerator.ArtifactsProperty]);
        _ = tensors;
    }

    [Fact]
    public void Regenerating_replaces_an_old_checkpoint()
    {
        var first = new MlpModelBuilder(4).Layer(2).Build(seed: 1);
        ArtifactGenerator.Generate(first, new ArtifactOptions(), _dir);
        var second = new MlpModelBuilder(4).Layer(2).Build(seed: 2);
        ArtifactGenerator.Generate(second, new ArtifactOptions(), _dir);
        using var session = TrainingEngine.Open(_dir);
        Assert.Equal(TensorProtos.ToFloatArray(second.Graph.Initializer.First(t => t.Name == "fc1.weight")), session.GetParameter("fc1.weight"));
    }
}
