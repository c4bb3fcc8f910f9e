using Microsoft.ML.OnnxRuntime;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Cli.Tests;

/// <summary>
/// Issue 13's CNN cases (tests/fixtures/parity/cnn_*, tests/parity/make_cnn_fixtures.py), beyond the weights that
/// <see cref="ParityTests"/> compares: BatchNormalization running statistics are non-trainable checkpoint state
/// that reaches PyTorch's values, frozen BN layers keep theirs bit for bit, and the exported inference model
/// normalises with the running statistics (PyTorch's eval mode).
/// </summary>
public sealed class CnnParityTests
{
    public static TheoryData<string> CnnCases => new(ParityCase.Names.Where(n => n.StartsWith("cnn_", StringComparison.Ordinal)));

    [Fact]
    public void The_cnn_cases_are_there()
    {
        string[] expected = ["cnn_a2_convbn_adamw_training_export", "cnn_a_convbn_adamw", "cnn_b_inverted_residual_sgd_momentum", "cnn_c_frozen_block_adamw", "cnn_d_conv1d_pools_sgd"];
        Assert.Equal(expected, ParityCase.Names.Where(n => n.StartsWith("cnn_", StringComparison.Ordinal)));
    }

    [Theory]
    [MemberData(nameof(CnnCases))]
    public void Running_statistics_and_eval_mode_inference_match_pytorch(string caseName)
    {
        var c = ParityCase.Load(caseName);
        var (rtol, floor) = c.Tolerance;
        using var dir = new TempDir().CopyFrom(c.Folder);
        CliRunner.Run(dir.Path, c.Command("artifacts")).Expect(0);
        CliRunner.Run(dir.Path, c.Command("train")).Expect(0);

        var expected = SafeTensorsFile.Read(Path.Combine(c.Folder, "expected.safetensors"));
        var layers = c.Json.GetProperty("batch_norm").GetProperty("layers").EnumerateArray().ToList();
        Assert.NotEmpty(layers);
        var trainedStats = layers.Where(l => l.GetProperty("trains_with_batch_statistics").GetBoolean())
            .SelectMany(l => new[] { l.GetProperty("running_mean").GetString()!, l.GetProperty("running_var").GetString()! }).ToHashSet();
        var frozenStats = c.Json.GetProperty("frozen_running_statistics").EnumerateArray().Select(e => e.GetString()!).ToList();

        // The checkpoint carries exactly the updated running statistics, at PyTorch's values; they are never parameters.
        var (meta, tensors) = CheckpointStore.Load(dir["trained/checkpoint"]);
        Assert.Equal(trainedStats.Order(), meta.NonTrainableState.Select(s => s.Name).Order());
        Assert.DoesNotContain(meta.Parameters, p => trainedStats.Contains(p.Name) || frozenStats.Contains(p.Name));
        foreach (var name in trainedStats)
            AssertClose(name, tensors.Get(name).ToFloatArray(), expected.Get(name).ToFloatArray(), rtol, floor);

        // Exported model: running statistics written in, frozen ones untouched, BN in inference form.
        var exported = OnnxModelReader.Load(dir["trained/model.onnx"]);
        var original = OnnxModelReader.Load(dir["model.onnx"]);
        float[] Init(global::Onnx.ModelProto m, string n) => TensorProtos.ToFloatArray(m.Graph.Initializer.Single(t => t.Name == n));
        foreach (var name in frozenStats)
            Assert.Equal(Init(original, name), Init(exported, name));
        foreach (var name in trainedStats)
            AssertClose(name, Init(exported, name), expected.Get(name).ToFloatArray(), rtol, floor);

        // Stock ONNX Runtime on the exported model = the trained torch module in eval mode.
        var data = SafeTensorsFile.Read(dir["data.safetensors"]).Get("x");
        var want = SafeTensorsFile.Read(Path.Combine(c.Folder, "expected_eval_logits.safetensors")).Get("logits");
        using var session = new InferenceSession(dir["trained/model.onnx"]);
        using var x = OrtValue.CreateTensorValueFromMemory(data.ToFloatArray(), data.Shape);
        using var ro = new RunOptions();
        using var outputs = session.Run(ro, new Dictionary<string, OrtValue> { ["x"] = x }, ["logits"]);
        AssertClose("logits", outputs[0].GetTensorDataAsSpan<float>().ToArray(), want.ToFloatArray(), rtol, floor);
        foreach (var bn in exported.Graph.Node.Where(n => n.OpType == "BatchNormalization"))
            Assert.DoesNotContain(bn.Attribute, a => a.Name == "training_mode" && a.I != 0);
    }

    private static void AssertClose(string name, float[] got, float[] want, double rtol, double floor)
    {
        Assert.Equal(want.Length, got.Length);
        for (var i = 0; i < want.Length; i++)
            Assert.True(ParityTests.Close(got[i], want[i], rtol, floor), $"'{name}'[{i}] = {got[i]} vs PyTorch {want[i]}");
    }
}
