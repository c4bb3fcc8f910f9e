using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Training.Tests.TestUtilities;

/// <summary>Artifacts made by the real <see cref="ArtifactBuilder"/> and <see cref="OptimizerGraphBuilder"/>.</summary>
public static class GeneratedArtifacts
{
    public static void Create(ModelProto model, ArtifactOptions options, string dir)
    {
        var artifacts = ArtifactBuilder.Build(model, options);
        ArtifactBuilder.Save(artifacts, dir);
    }

    public static void Create(string modelPath, ArtifactOptions options, string dir) =>
        Create(OnnxModelReader.Load(modelPath), options, dir);
}
