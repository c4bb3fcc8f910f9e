using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Graphs;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Graphs;

public sealed class FreshGradientGraphTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private global::Onnx.ModelProto TrainingModel()
    {
        var path = _dir.Combine("artifacts");
        LinearRegressionArtifacts.Create(path, new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.1 });
        return OnnxModelReader.Load(Path.Combine(path, new ArtifactFiles().TrainingModel));
    }

    private static global::Onnx.ModelProto? Fresh(global::Onnx.ModelProto m) =>
        FreshGradientGraph.TryCreate(m, ["W", "b"]);

    [Fact]
    public void Drops_the_accumulation_tail_and_writes_gradients_to_the_outputs()
    {
        var training = TrainingModel();
        var fresh = Fresh(training);
        Assert.NotNull(fresh);
        var g = fresh!.Graph;
        Assert.DoesNotContain(g.Node, n => n.OpType == "Where");
        Assert.DoesNotContain(g.Input, i => i.Name == ArtifactContract.LazyResetGradInput || i.Name.EndsWith(ArtifactContract.AccumulationBufferSuffix, StringComparison.Ordinal));
        foreach (var p in new[] { "W", "b" })
            Assert.Single(g.Node, n => n.Output.Contains(p + ArtifactContract.AccumulationOutputSuffix));
        Assert.Equal(training.Graph.Output.Select(o => o.Name), g.Output.Select(o => o.Name));
        // Two nodes (Add, Where) fewer per parameter; the source model is not modified.
        Assert.Equal(training.Graph.Node.Count - 4, g.Node.Count);
        Assert.Contains(training.Graph.Node, n => n.OpType == "Where");
    }

    [Fact]
    public void Returns_null_when_the_tail_is_not_the_artifact_builder_shape()
    {
        var training = TrainingModel();
        var where = training.Graph.Node.First(n => n.OpType == "Where");
        where.Input[0] = where.Input[1]; // no longer selected by lazy_reset_grad
        Assert.Null(Fresh(training));
    }

    [Fact]
    public void Returns_null_for_graphs_that_do_not_declare_the_builders_accumulation_tail()
    {
        var training = TrainingModel();
        Assert.Contains(training.MetadataProps, m => m.Key == ArtifactContract.AccumulationTailKey);
        var marker = training.MetadataProps.Single(m => m.Key == ArtifactContract.AccumulationTailKey);
        training.MetadataProps.Remove(marker);
        Assert.Null(Fresh(training)); // same nodes, but nothing says this tail is the builder's
    }
}
