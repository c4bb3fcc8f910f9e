using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Transforms;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Transforms;

/// <summary>LayerNorm written out in element-wise ops (PyTorch's export before opset 17) trains as one LayerNormalization.</summary>
public sealed class LayerNormFusionTests
{
    private const long H = 6;

    /// <summary>x[2,3,H] → Linear → decomposed LayerNorm(γ, β) → Linear(H→2), like a BERT block's tail at opset 13.</summary>
    private static ModelProto Block(long opset = 13, bool squareAsMul = false, bool reciprocal = false, bool withBias = true, bool exposeCentered = false,
        long axis = -1, bool constantNodes = false)
    {
        var f = new ModelFactory(opset);
        var x = f.Input("x", DataType.Float, 2L, 3L, H);
        var h = f.Node("Add", [f.Node("MatMul", [x, f.Param("w1", [H, H])]), f.Param("b1", [H])]);
        string Scalar(string name, float v) => constantNodes
            ? f.Node("Constant", [], Attr.Tensor("value", TensorProtos.Float(name, [v])))
            : f.ConstFloat(name, [v]);
        AttributeProto[] Axes() => opset >= 18 ? [] : [Attr.Ints("axes", axis)];
        string[] MeanInputs(string t) => opset >= 18 ? [t, f.Const("axes_" + t, [axis])] : [t];
        var mean = f.Node("ReduceMean", MeanInputs(h), Axes());
        var d = f.Node("Sub", [h, mean]);
        var sq = squareAsMul ? f.Node("Mul", [d, d]) : f.Node("Pow", [d, Scalar("two", 2f)]);
        var variance = f.Node("ReduceMean", MeanInputs(sq), Axes());
        var s = f.Node("Sqrt", [f.Node("Add", [variance, Scalar("eps", 1e-5f)])]);
        var n = reciprocal ? f.Node("Mul", [d, f.Node("Reciprocal", [s])]) : f.Node("Div", [d, s]);
        var y = f.Node("Mul", [n, f.Param("gamma", [H], 0.5, 1.5)]);
        if (withBias) y = f.Node("Add", [f.Param("beta", [H], -0.5, 0.5), y]);
        var logits = f.Node("MatMul", [y, f.Param("w2", [H, 2])]);
        var model = f.Output(logits, 2L, 3L, 2L);
        if (exposeCentered) model.Graph.Output.Add(ValueInfos.Tensor(d, DataType.Float, 2L, 3L, H));
        return model;
    }

    private static int Count(ModelProto m, string op) => m.Graph.Node.Count(n => n.OpType == op);

    private static float[] Run(ModelProto model, float[] x)
    {
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        using var input = OrtValue.CreateTensorValueFromMemory(x, [2, 3, H]);
        using var results = session.Run(new RunOptions(), ["x"], [input], [model.Graph.Output[0].Name]);
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Theory]
    [InlineData(13, false, false, true, false)]
    [InlineData(13, true, true, false, false)]
    [InlineData(14, false, true, true, true)]
    [InlineData(17, true, false, true, true)]
    [InlineData(18, false, false, true, false)]
    public void The_chain_becomes_one_LayerNormalization_with_the_same_outputs(long opset, bool squareAsMul, bool reciprocal, bool withBias, bool constantNodes)
    {
        var model = Block(opset, squareAsMul, reciprocal, withBias, constantNodes: constantNodes);
        var before = OnnxModelWriter.ToBytes(model);
        var fused = LayerNormFusion.Apply(model);
        Assert.Equal(before, OnnxModelWriter.ToBytes(model)); // the caller's model is not modified
        Assert.Equal(1, Count(fused, "LayerNormalization"));
        Assert.Equal(0, Count(fused, "ReduceMean") + Count(fused, "Sqrt") + Count(fused, "Pow") + Count(fused, "Reciprocal") + Count(fused, "Constant"));
        Assert.Equal(Math.Max(opset, 17), OpsetUpgrade.DefaultOpset(fused));
        var ln = fused.Graph.Node.Single(n => n.OpType == "LayerNormalization");
        Assert.Equal(withBias ? ["gamma", "beta"] : ["gamma"], ln.Input.Skip(1).ToArray());
        Assert.Equal(1e-5f, ln.GetFloat("epsilon", 0));
        // ε and the exponent went with the chain; the parameters stayed.
        Assert.Equal(withBias ? ["w1", "b1", "gamma", "beta", "w2"] : ["w1", "b1", "gamma", "w2"], fused.Graph.Initializer.Select(t => t.Name).Where(n => !n.StartsWith("axes_", StringComparison.Ordinal)).Order().ToArray().OrderBy(n => Array.IndexOf(["w1", "b1", "gamma", "beta", "w2"], n)).ToArray());

        var x = Enumerable.Range(0, (int)(2 * 3 * H)).Select(i => (float)Math.Sin(i * 0.7) * 3).ToArray();
        var expected = Run(model, x);
        var actual = Run(fused, x);
        for (var i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-5, $"element {i}: {expected[i]} vs {actual[i]}");
    }

    [Fact]
    public void The_training_graph_of_an_opset_13_export_differentiates_the_fused_node_and_matches_finite_differences()
    {
        var model = Block();
        // The default selection (every float initializer) leaves the chain's ε and exponent alone, as PyTorch does.
        var artifacts = ArtifactBuilder.Build(model, new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.Mse, OutputName = model.Graph.Output[0].Name },
        });
        Assert.Equal(["b1", "beta", "gamma", "w1", "w2"], artifacts.Manifest.TrainableParameters.Select(p => p.Name).Order().ToArray());
        var training = artifacts.Training;
        Assert.Equal(1, Count(training, "LayerNormalization"));
        Assert.Equal(0, Count(training, "Pow") + Count(training, "Sqrt"));
        // float64 check of every parameter, γ and β through the LayerNormalization rule.
        var report = GradientAssert.Passes(model, new GradientCheckOptions { Selection = new ParameterSelection { Trainable = ["w1", "b1", "gamma", "beta", "w2"] } });
        Assert.Contains(report.Parameters, p => p.Name == "gamma");
        Assert.Contains(report.Parameters, p => p.Name == "beta");
    }

    [Fact]
    public void A_chain_whose_epsilon_is_selected_to_train_keeps_its_ops()
    {
        var model = Block();
        var training = ArtifactBuilder.Build(model, new ArtifactOptions
        {
            Selection = new ParameterSelection { Trainable = ["w*", "gamma", "beta", "eps"] },
            Loss = new LossSpec { Kind = LossKind.Mse, OutputName = model.Graph.Output[0].Name },
        }).Training;
        Assert.Equal(0, Count(training, "LayerNormalization"));
        Assert.Equal(1, Count(training, "Sqrt"));
    }

    [Fact]
    public void A_chain_whose_intermediate_is_read_elsewhere_or_that_normalises_another_axis_is_left_alone()
    {
        Assert.Same(Block(exposeCentered: true) is var m1 ? m1 : null, LayerNormFusion.Apply(m1));
        var m2 = Block(axis: 1);
        Assert.Same(m2, LayerNormFusion.Apply(m2));
        // Opsets without LayerNormalization's neighbours' guarantees (RoiAlign's default changed at 16) stay as they are.
        var m3 = Block();
        m3.Graph.Node.Add(new NodeProto { OpType = "RoiAlign", Input = { "x", "rois", "idx" }, Output = { "unused" } });
        Assert.Same(m3, LayerNormFusion.Apply(m3));
    }
}
