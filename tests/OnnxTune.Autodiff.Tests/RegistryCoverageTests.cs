using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Autodiff.Tests.Rules;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Autodiff.Tests;

public class RegistryCoverageTests
{
    // Issue 2's required list, plus what all-MiniLM-L6-v2 and newer BERT exports use (issue 3).
    public static TheoryData<string> RequiredOps => new()
    {
        "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Softmax",
        "LogSoftmax", "Exp", "Log", "Sqrt", "Pow", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
        "Concat", "Slice", "ReduceMean", "ReduceSum", "Dropout", "Gather", "Erf", "Cast", "Where", "Expand",
        "LayerNormalization", "SoftmaxCrossEntropyLoss",
        // Issue 13: vision models (torchvision MobileNetV2 / ResNet-18 exports and their usual variants).
        "Conv", "ConvTranspose", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
        "Clip", "HardSigmoid", "HardSwish", "Pad", "InstanceNormalization", "Resize",
        // Other exporters' reductions and activations (Mish needs opset 18).
        "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp",
        "Elu", "Selu", "Celu", "ThresholdedRelu", "Softsign", "Sin", "Cos", "Atan",
    };

    [Theory]
    [MemberData(nameof(RequiredOps))]
    public void Required_op_has_a_gradient_rule(string op) =>
        Assert.NotNull(GradientRuleRegistry.Default.Find("", op, 17));

    [Theory]
    [InlineData("Shape")]
    [InlineData("Equal")]
    [InlineData("ConstantOfShape")]
    [InlineData("Constant")]
    public void Shape_and_comparison_ops_are_non_differentiable(string op) =>
        Assert.True(GradientRuleRegistry.Default.IsNonDifferentiable("", op));

    [Fact]
    public void Missing_rule_names_the_op_type_and_node()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 3]);
        var y = f.Node("Det", [w]);
        var e = Assert.Throws<GradientNotDefinedException>(() => TrainingGraphBuilder.Build(f.Output(y), new ParameterSelection(), new LossSpec { Kind = LossKind.Mse }));
        Assert.Equal("Det", e.OpType);
        Assert.Contains("Det node", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Generated_graphs_use_only_default_domain_ops_and_keep_the_batch_symbolic()
    {
        var dir = Path.GetDirectoryName(Path.GetDirectoryName(FixtureGradientTests.FixturePath(Path.Combine("parity", "a_mlp_ce_sgd_momentum", "model.onnx"))))!;
        var models = Directory.GetDirectories(dir).Select(d => Path.Combine(d, "model.onnx")).Where(File.Exists).ToList();
        Assert.NotEmpty(models);
        foreach (var path in models)
        {
            var model = OnnxModelReader.Load(path);
            var artifacts = ArtifactBuilder.Build(model, new ArtifactOptions { Loss = new LossSpec { Kind = LossKind.Mse } });
            foreach (var graph in new[] { artifacts.Training, artifacts.Eval, artifacts.Optimizer })
            {
                Assert.All(graph.Graph.Node, n => Assert.True(string.IsNullOrEmpty(n.Domain), $"{Path.GetFileName(Path.GetDirectoryName(path))}: {n.OpType} in domain '{n.Domain}'"));
                Assert.All(graph.OpsetImport, o => Assert.True(string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx", $"opset import of domain {o.Domain}"));
            }
            foreach (var input in artifacts.Training.Graph.Input.Where(i => model.Graph.Input.Any(m => m.Name == i.Name && !model.Graph.Initializer.Any(t => t.Name == i.Name))))
                Assert.False(input.Type.TensorType.Shape.Dim[0].HasDimValue, $"{input.Name}: batch dim was fixed");
        }
    }
}
