using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests;

/// <summary>
/// TrainingEngine on generated artifacts against the weights and optimizer state PyTorch reached
/// (tests/fixtures/parity, see tests/parity/README.md): batches of 8 in order, 3 epochs, one update per batch.
/// </summary>
public sealed class PyTorchParityTests
{
    [Theory]
    [InlineData("a_mlp_ce_sgd_momentum")]
    [InlineData("b_mlp_ce_adamw")]
    [InlineData("c_mlp_ce_adamw_frozen_fc1")]
    [InlineData("e_mlp_bce_adamw_clip")]
    [InlineData("h_mlp_l1_sgd_momentum")]
    [InlineData("c2_mlp_ce_sgd_frozen_fc2")]
    [InlineData("d_mlp_mse_sgd")]
    [InlineData("i_mlp_ce_ignore_index_adamw")]
    [InlineData("f2_attention_relu_ce_adamw")]
    [InlineData("g_helper_gemm_ce_sgd")]
    public void Training_reaches_pytorch_weights_and_optimizer_state(string caseName)
    {
        var folder = Path.Combine(Fixtures.Root, "parity", caseName);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "case.json")));
        var c = json.RootElement;
        var hp = c.GetProperty("hyperparameters");
        double Hp(string name, double fallback) => hp.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : fallback;
        var isAdam = c.GetProperty("optimizer").GetString() == "adamw";
        var optimizer = new OptimizerSpec
        {
            Kind = isAdam ? OptimizerKind.AdamW : OptimizerKind.Sgd,
            LearningRate = Hp("lr", 1e-3),
            WeightDecay = Hp("weight_decay", isAdam ? 0.01 : 0),
            Beta1 = isAdam ? hp.GetProperty("betas")[0].GetDouble() : 0.9,
            Beta2 = isAdam ? hp.GetProperty("betas")[1].GetDouble() : 0.999,
            Epsilon = Hp("eps", 1e-8),
            Momentum = Hp("momentum", 0),
            Dampening = Hp("dampening", 0),
            Nesterov = hp.TryGetProperty("nesterov", out var n) && n.GetBoolean(),
            MaxGradNorm = hp.TryGetProperty("max_grad_norm", out var mg) && mg.ValueKind == JsonValueKind.Number ? mg.GetDouble() : null,
        };
        var loss = c.GetProperty("loss").GetString() switch
        {
            "cross-entropy" => LossKind.CrossEntropy,
            "mse" => LossKind.Mse,
            "bce-with-logits" => LossKind.BceWithLogits,
            "l1" => LossKind.L1,
            var other => throw new InvalidOperationException(other),
        };
        var frozen = c.GetProperty("frozen_globs").EnumerateArray().Select(e => e.GetString()!).ToList();
        using var tmp = new TempDirectory();
        GeneratedArtifacts.Create(Path.Combine(folder, "model.onnx"), new ArtifactOptions
        {
            Selection = new ParameterSelection { Frozen = frozen },
            Loss = new LossSpec
            {
                Kind = loss,
                OutputName = c.GetProperty("loss_output").GetString()!,
                IgnoreIndex = c.TryGetProperty("ignore_index", out var ii) ? ii.GetInt64() : null,
            },
            Optimizer = optimizer,
        }, tmp.Path);

        var data = SafeTensorsFile.Read(Path.Combine(folder, "data.safetensors"));
        var inputName = c.GetProperty("inputs")[0].GetProperty("name").GetString()!;
        var x = data.Get(inputName);
        var labels = data.Get("labels");
        var samples = (int)x.Shape[0];
        var batchSize = c.GetProperty("batch_size").GetInt32();
        var epochs = c.GetProperty("epochs").GetInt32();
        var expectedLosses = c.GetProperty("step_losses").EnumerateArray().Select(e => e.GetDouble()).ToArray();

        using var session = TrainingEngine.Open(tmp.Path, new TrainingEngineOptions { IntraOpThreads = 1 });
        var xRow = (int)(x.ElementCount() / samples);
        var lRow = (int)(labels.ElementCount() / samples);
        var xs = x.ToFloatArray();
        var step = 0;
        for (var epoch = 0; epoch < epochs; epoch++)
            for (var start = 0; start < samples; start += batchSize)
            {
                var count = Math.Min(batchSize, samples - start);
                var batch = new TrainingBatch().Add(inputName, xs.AsMemory(start * xRow, count * xRow), [count, .. x.Shape[1..]]);
                long[] labelShape = [count, .. labels.Shape[1..]];
                if (labels.DType == SafeTensorDType.I64)
                    batch.WithLabels(labels.ToInt64Array().AsMemory(start * lRow, count * lRow), labelShape);
                else
                    batch.WithLabels(labels.ToFloatArray().AsMemory(start * lRow, count * lRow), labelShape);
                var l = session.TrainStep(batch);
                Assert.True(Math.Abs(l - expectedLosses[step]) <= 1e-4 * Math.Max(Math.Abs(expectedLosses[step]), 1e-2),
                    $"step {step}: loss {l} vs PyTorch {expectedLosses[step]}");
                session.OptimizerStep();
                step++;
            }

        var expected = SafeTensorsFile.Read(Path.Combine(folder, "expected.safetensors"));
        var exported = tmp.Combine("trained.onnx");
        session.ExportInferenceModel(exported);
        var model = OnnxTune.Onnx.ModelIO.OnnxModelReader.Load(exported);
        foreach (var t in expected.Tensors)
        {
            var got = OnnxTune.Onnx.Tensors.TensorProtos.ToFloatArray(model.Graph.Initializer.Single(i => i.Name == t.Name));
            AssertParity(t.Name, t.ToFloatArray(), got);
        }
        foreach (var t in SafeTensorsFile.Read(Path.Combine(folder, "expected_optimizer_state.safetensors")).Tensors)
            AssertParity(t.Name, t.ToFloatArray(), session.GetOptimizerState(t.Name));
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
