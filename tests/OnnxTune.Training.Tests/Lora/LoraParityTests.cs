using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Lora;

/// <summary>
/// Issue 12's "done means": artifacts with LoRA, trained in order, reach PyTorch's PEFT-style lora_A/lora_B, merged
/// weights and optimizer state (tests/fixtures/parity/l*, see tests/parity/README.md) to 1e-4 relative (floor 1e-2),
/// starting from the artifacts' own initial adapter values.
/// </summary>
public sealed class LoraParityTests
{
    [Theory]
    [InlineData("l1_mlp_lora_adamw")]
    [InlineData("l2_attention_lora_sgd")]
    public void Lora_training_reaches_pytorch_adapters_and_merged_weights(string caseName)
    {
        var c = LoraCase.Load(caseName);
        using var tmp = new TempDirectory();
        var built = ArtifactGenerator.Generate(OnnxModelReader.Load(c.ModelPath), c.Options(), tmp.Path);
        var adapterNames = c.Json.GetProperty("adapter_tensors").EnumerateArray().Select(e => e.GetString()!).ToList();
        var trainableBase = c.Json.GetProperty("trainable_base_parameters").EnumerateArray().Select(e => e.GetString()!).ToList();
        Assert.Equal(adapterNames.Concat(trainableBase).Order(), built.Manifest.TrainableParameters.Select(p => p.Name).Order());
        // The adapted weights are frozen and the backward graph computes nothing for them.
        foreach (var w in built.Manifest.Lora!.Weights)
        {
            Assert.Contains(built.Manifest.FrozenParameters, p => p.Name == w.Weight);
            Assert.DoesNotContain(built.Training.Graph.Output, o => o.Name.StartsWith(w.Weight + ".grad", StringComparison.Ordinal) || o.Name == w.Weight + "_grad");
        }

        using var engine = TrainingEngine.Open(tmp.Path, new TrainingEngineOptions { IntraOpThreads = 1 });
        // The initial checkpoint holds exactly the values the PyTorch reference started from.
        foreach (var t in SafeTensorsFile.Read(Path.Combine(c.Folder, "initial_adapters.safetensors")).Tensors)
            Assert.Equal(t.ToFloatArray(), engine.GetParameter(t.Name));

        var losses = c.Train(engine);
        var expectedLosses = c.Json.GetProperty("step_losses").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.Equal(expectedLosses.Length, losses.Count);
        for (var i = 0; i < losses.Count; i++)
            Assert.True(Math.Abs(losses[i] - expectedLosses[i]) <= 1e-4 * Math.Max(Math.Abs(expectedLosses[i]), 1e-2), $"step {i}: {losses[i]} vs PyTorch {expectedLosses[i]}");

        var expected = SafeTensorsFile.Read(Path.Combine(c.Folder, "expected.safetensors"));
        foreach (var name in adapterNames.Concat(trainableBase))
            AssertParity(name, expected.Get(name).ToFloatArray(), engine.GetParameter(name));
        foreach (var t in SafeTensorsFile.Read(Path.Combine(c.Folder, "expected_optimizer_state.safetensors")).Tensors)
            AssertParity(t.Name, t.ToFloatArray(), engine.GetOptimizerState(t.Name));

        // Merged export: the source graph, adapted weights = W + scale·B·A in their own layout, other weights as trained.
        var mergedPath = tmp.Combine("merged.onnx");
        engine.ExportMergedModel(mergedPath);
        var merged = OnnxModelReader.Load(mergedPath);
        var source = OnnxModelReader.Load(c.ModelPath);
        Assert.Equal(source.Graph.Node.Select(n => n.OpType), merged.Graph.Node.Select(n => n.OpType));
        Assert.Equal(source.Graph.Initializer.Select(t => t.Name), merged.Graph.Initializer.Select(t => t.Name));
        Assert.Equal(source.Graph.Input.Select(t => t.Name), merged.Graph.Input.Select(t => t.Name));
        var expectedMerged = SafeTensorsFile.Read(Path.Combine(c.Folder, "expected_merged.safetensors"));
        foreach (var t in merged.Graph.Initializer)
        {
            var want = expectedMerged.Tensors.Any(e => e.Name == t.Name) ? expectedMerged.Get(t.Name) : expected.Get(t.Name);
            Assert.Equal(want.Shape, t.Dims.ToArray());
            AssertParity(t.Name, want.ToFloatArray(), TensorProtos.ToFloatArray(t));
        }
    }

    private static void AssertParity(string name, float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            var tol = 1e-4 * Math.Max(Math.Abs(expected[i]), 1e-2);
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"{name}[{i}]: PyTorch {expected[i]:R}, OnnxTune {actual[i]:R}");
        }
    }
}
