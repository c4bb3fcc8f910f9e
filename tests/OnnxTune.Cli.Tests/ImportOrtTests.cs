using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Cli.Tests;

public sealed class ImportOrtTests
{
    private static string Folder(string name) => Path.Combine(Repo.Fixtures, "ortimport", name);

    [Fact]
    public void Import_ort_then_export_gives_the_ORT_checkpoints_weights()
    {
        using var tmp = new TempDir();
        var run = CliRunner.Run(tmp.Path, "import-ort", Folder("pbseq-mse-adamw"), "--out", "imported").Expect(0);
        Assert.Contains("ProtobufSequence checkpoint", run.Out, StringComparison.Ordinal);
        Assert.Contains("step 3", run.Out, StringComparison.Ordinal);
        Assert.Contains("torch.optim.AdamW", run.Out, StringComparison.Ordinal);
        CliRunner.Run(tmp.Path, "export", "imported", "--out", "model.onnx").Expect(0);
        var exported = OnnxModelReader.Load(Path.Combine(tmp.Path, "model.onnx")).Graph.Initializer.ToDictionary(t => t.Name);
        var reference = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder("pbseq-mse-adamw"), "reference.json"))).RootElement;
        foreach (var p in reference.GetProperty("parameters").EnumerateObject())
            Assert.Equal(p.Value.GetProperty("bits").EnumerateArray().Select(b => b.GetUInt32()),
                TensorProtos.ToFloatArray(exported[p.Name]).Select(BitConverter.SingleToUInt32Bits));

        // train continues from the ORT state: step 3 + 2 epochs of 2 batches.
        var rng = new Random(3);
        var x = Enumerable.Range(0, 16 * 4).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var y = Enumerable.Range(0, 16 * 3).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        new OnnxTune.Training.SafeTensors.SafeTensorsFile([
            OnnxTune.Training.SafeTensors.SafeTensor.FromFloats("input", x, 16, 4),
            OnnxTune.Training.SafeTensors.SafeTensor.FromFloats("target", y, 16, 3)]).Write(Path.Combine(tmp.Path, "data.safetensors"));
        var train = CliRunner.Run(tmp.Path, "train", "imported", "--data", "data.safetensors", "--out", "trained", "--epochs", "2", "--batch-size", "8", "--no-shuffle").Expect(0);
        Assert.Contains("4 steps", train.Out, StringComparison.Ordinal);
        var (meta, _) = OnnxTune.Training.Checkpoints.CheckpointStore.Load(Path.Combine(tmp.Path, "trained", "checkpoint"));
        Assert.Equal(7, meta.Step);
    }

    [Fact]
    public void Import_ort_takes_file_names_and_names_what_it_cannot_import()
    {
        using var tmp = new TempDir();
        CliRunner.Run(tmp.Path, "import-ort", Folder("flatbuffer-ce-adamw"), "--out", "a", "--checkpoint", "no-such-checkpoint")
            .ExpectFailure("no-such-checkpoint", "does not exist");
        CliRunner.Run(tmp.Path, "import-ort", Folder("flatbuffer-ce-adamw"), "--out", "b", "--optimizer-model", "eval_model.onnx")
            .ExpectFailure("AdamWOptimizer or SGDOptimizerV2");
        var ok = CliRunner.Run(tmp.Path, "import-ort", Folder("flatbuffer-ce-adamw"), "--out", "c", "--eval-model", "eval_model.onnx", "--checkpoint", "checkpoint").Expect(0);
        Assert.Contains("HuggingFace AdamW", ok.Out, StringComparison.Ordinal);
        Assert.Contains("3 properties", ok.Out, StringComparison.Ordinal);
    }
}
