using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Cli.Tests;

/// <summary>
/// <c>onnxtune artifacts --lora</c>, <c>train --no-shuffle</c> and <c>export --merged / --adapter</c> as the LoRA
/// parity cases' case.json says (their training is checked by <see cref="ParityTests"/>); bad LoRA flags fail by name.
/// </summary>
public sealed class LoraCliTests
{
    [Fact]
    public void Export_merged_and_adapter_from_the_train_output()
    {
        var c = ParityCase.Load("l1_mlp_lora_adamw");
        using var dir = new TempDir().CopyFrom(c.Folder);
        Assert.Contains("lora: 2 weight(s), rank 4, alpha 8 (scale 2)", CliRunner.Run(dir.Path, c.Command("artifacts")).Expect(0).Out, StringComparison.Ordinal);
        CliRunner.Run(dir.Path, c.Command("train")).Expect(0);
        var export = CliRunner.Run(dir.Path, c.Command("export")).Expect(0);
        Assert.Contains("2 LoRA adapter(s) merged", export.Out, StringComparison.Ordinal);

        var merged = OnnxModelReader.Load(dir["merged.onnx"]);
        Assert.Equal(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"], merged.Graph.Initializer.Select(t => t.Name));
        var expectedMerged = SafeTensorsFile.Read(Path.Combine(c.Folder, "expected_merged.safetensors"));
        foreach (var want in expectedMerged.Tensors)
        {
            var got = TensorProtos.ToFloatArray(merged.Graph.Initializer.Single(t => t.Name == want.Name));
            var w = want.ToFloatArray();
            for (var i = 0; i < w.Length; i++)
                Assert.True(ParityTests.Close(got[i], w[i], 1e-4, 1e-2), $"{want.Name}[{i}] = {got[i]} vs PyTorch {w[i]}");
        }
        var adapterBase = OnnxModelReader.Load(dir["adapter_base.onnx"]);
        Assert.Equal(["x", "fc2.bias", "fc1.weight.lora_A", "fc1.weight.lora_B", "fc2.weight.lora_A", "fc2.weight.lora_B"], adapterBase.Graph.Input.Select(i => i.Name));
        Assert.True(new FileInfo(dir["trained.onnx_adapter"]).Length > 0);
    }

    [Fact]
    public void Bad_lora_flags_are_refused_by_name()
    {
        var c = ParityCase.Load("l1_mlp_lora_adamw");
        using var dir = new TempDir().CopyFrom(c.Folder);
        CliRunner.Run(dir.Path, "artifacts", "model.onnx", "--out", "x", "--lora-rank", "4").ExpectFailure("--lora-rank needs --lora");
        CliRunner.Run(dir.Path, "artifacts", "model.onnx", "--out", "x", "--lora", "fc9.*").ExpectFailure("--lora 'fc9.*'");
        CliRunner.Run(dir.Path, "artifacts", "model.onnx", "--out", "x", "--lora", "fc1.bias").ExpectFailure("'fc1.bias'", "Gemm");
        CliRunner.Run(dir.Path, "artifacts", "model.onnx", "--out", "x", "--lora", "fc1.weight", "--lora-rank", "0").ExpectFailure("--lora-rank");
        CliRunner.Run(dir.Path, c.Command("artifacts")).Expect(0);
        CliRunner.Run(dir.Path, "export", "artifacts", "--adapter", "a.onnx_adapter").ExpectFailure("--adapter needs --adapter-base");
        CliRunner.Run(dir.Path, "export", "artifacts").ExpectFailure("--merged");
    }
    [Fact]
    public void Lr_scale_sets_per_tensor_learning_rates_like_parameter_groups()
    {
        var c = ParityCase.Load("l1_mlp_lora_adamw");
        using var dir = new TempDir().CopyFrom(c.Folder);
        CliRunner.Run(dir.Path, c.Command("artifacts")).Expect(0);
        string[] Train(string @out, params string[] extra) =>
            ["train", "artifacts", "--data", "data.safetensors", "--out", @out, "--epochs", "3", "--batch-size", "8", "--no-shuffle", .. extra];
        CliRunner.Run(dir.Path, Train("frozen-fc2", "--lr-scale", "fc2.*=0")).Expect(0);
        CliRunner.Run(dir.Path, Train("half", "--lr-scale", "*=0.5")).Expect(0);
        CliRunner.Run(dir.Path, Train("half-lr", "--lr", "0.005")).Expect(0);

        var (_, initial) = CheckpointStore.Load(dir["artifacts/checkpoint"]);
        var (meta, frozen) = CheckpointStore.Load(dir["frozen-fc2/checkpoint"]);
        foreach (var p in meta.Parameters)
        {
            var moved = !initial.Get(p.Name).ToFloatArray().SequenceEqual(frozen.Get(p.Name).ToFloatArray());
            Assert.True(moved == !p.Name.StartsWith("fc2.", StringComparison.Ordinal), $"{p.Name} moved: {moved}");
        }
        // AdamW's decoupled decay is lr·wd·θ, so scaling every group by 0.5 is halving --lr.
        var (_, half) = CheckpointStore.Load(dir["half/checkpoint"]);
        var (_, halfLr) = CheckpointStore.Load(dir["half-lr/checkpoint"]);
        foreach (var p in meta.Parameters)
            ParityTests.AssertClose(p.Name, half.Get(p.Name).ToFloatArray(), halfLr.Get(p.Name).ToFloatArray(), 1e-6, 1e-7);

        CliRunner.Run(dir.Path, Train("x", "--lr-scale", "fc9.*=2")).ExpectFailure("'fc9.*'", "matches no trainable parameter");
        CliRunner.Run(dir.Path, Train("x", "--lr-scale", "fc2.bias")).ExpectFailure("--lr-scale 'fc2.bias'", "glob=factor");
        CliRunner.Run(dir.Path, Train("x", "--lr-scale", "fc2.bias=-1")).ExpectFailure("--lr-scale 'fc2.bias=-1'", ">= 0");
    }
}
