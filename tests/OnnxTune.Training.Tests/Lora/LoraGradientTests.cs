using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Lora;

/// <summary>The LoRA-augmented training graph's lora_A/lora_B gradients against central finite differences (float64 on ONNX Runtime).</summary>
public sealed class LoraGradientTests
{
    [Theory]
    [InlineData("l1_mlp_lora_adamw", new[] { "fc1.weight", "fc2.weight" })]                    // Gemm transB = 1
    [InlineData("l2_attention_lora_sgd", new[] { "wq", "wv", "w1", "head.weight" })]             // MatMul on [batch, seq, in]; Gemm head
    [InlineData("g_helper_gemm_ce_sgd", new[] { "W?" })]                                // Gemm transB = 1 and transB = 0 (onnx.helper graph)
    public void Adapter_gradients_match_finite_differences(string caseName, string[] targets)
    {
        var model = OnnxModelReader.Load(Path.Combine(Fixtures.Root, "parity", caseName, "model.onnx"));
        var lora = LoraGraph.Augment(model, new LoraOptions { Targets = targets, Rank = 3, Alpha = 5 }, training: true);
        // B starts at zero, which makes A's gradient zero: check at a point where both are non-zero.
        var rng = new Random(11);
        var g = lora.Model.Graph;
        foreach (var w in lora.Manifest.Weights)
        {
            var index = g.Initializer.ToList().FindIndex(t => t.Name == w.B);
            var t = g.Initializer[index];
            g.Initializer[index] = TensorProtos.Float(w.B, Enumerable.Range(0, (int)TensorProtos.ElementCount(t)).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), t.Dims.ToArray());
        }
        var names = lora.Manifest.TensorNames.ToList();
        var report = GradientChecker.Check(lora.Model, new GradientCheckOptions
        {
            Selection = new ParameterSelection { TrainableNames = names },
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
            Seed = 3,
            DefaultDimValue = 3,
        });
        Assert.True(report.DoublePrecision);
        Assert.Equal(names.Order(), report.Parameters.Select(p => p.Name).Order());
        foreach (var p in report.Parameters)
            Assert.True(p.Passed && p.ElementsChecked > 0, $"{p.Name}: max relative error {p.MaxRelativeError:E2} (abs {p.MaxAbsoluteError:E2}, {p.ElementsChecked} elements), tolerance {report.Tolerance}");
    }
}
