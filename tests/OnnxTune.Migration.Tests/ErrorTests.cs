using Google.Protobuf;
using Onnx;
using OnnxTune.Migration.Checkpoints;
using OnnxTune.Migration.Import;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Migration.Tests;

public sealed class ErrorTests
{
    private static OrtImportException ImportFails(string folder, Action<string> damage)
    {
        using var tmp = new TempDir();
        var copy = Fixtures.CopyTo(folder, tmp.Sub("ort"));
        damage(copy);
        return Assert.Throws<OrtImportException>(() => OrtArtifactImporter.Import(copy, tmp.Sub("out")));
    }

    private static void EditModel(string path, Action<ModelProto> edit)
    {
        var model = OnnxModelReader.Load(path);
        edit(model);
        File.WriteAllBytes(path, model.ToByteArray());
    }

    [Fact]
    public void A_com_microsoft_op_in_the_eval_model_is_named()
    {
        var e = ImportFails("flatbuffer-ce-adamw", dir => EditModel(Path.Combine(dir, "eval_model.onnx"), m =>
        {
            var relu = m.Graph.Node.First(n => n.OpType == "Relu");
            relu.OpType = "FastGelu";
            relu.Domain = "com.microsoft";
        }));
        Assert.Equal(OrtImportErrorKind.UnsupportedOperator, e.Kind);
        Assert.Equal("com.microsoft.FastGelu", e.Subject);
        Assert.Contains("com.microsoft.FastGelu", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_nominal_checkpoint_is_refused()
    {
        var e = ImportFails("flatbuffer-ce-adamw", dir =>
        {
            var path = Path.Combine(dir, "checkpoint");
            File.WriteAllBytes(path, OrtFlatbufferCheckpoint.Write(OrtCheckpointReader.Read(path), nominal: true));
        });
        Assert.Equal(OrtImportErrorKind.NominalCheckpoint, e.Kind);
        Assert.Contains("nominal", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_flatbuffer_writer_round_trips_what_the_reader_read()
    {
        var path = Path.Combine(Fixtures.Folder("flatbuffer-ce-adamw"), "checkpoint");
        var read = OrtCheckpointReader.Read(path);
        using var tmp = new TempDir();
        File.WriteAllBytes(tmp.Sub("ckpt"), OrtFlatbufferCheckpoint.Write(read));
        var again = OrtCheckpointReader.Read(tmp.Sub("ckpt"));
        Assert.Equal(read.Trainable.Select(t => (t.Name, Convert.ToHexString(t.Data))), again.Trainable.Select(t => (t.Name, Convert.ToHexString(t.Data))));
        Assert.Equal(read.OptimizerGroups[0].Step, again.OptimizerGroups[0].Step);
        Assert.Equal(read.Properties.OrderBy(p => p.Key), again.Properties.OrderBy(p => p.Key));
    }

    [Theory]
    [InlineData("adam_mode", 0L, 0L, "AdamWOptimizer.correct_bias")]
    [InlineData("adam_mode", 2L, 1L, "AdamWOptimizer.adam_mode")]
    public void An_AdamW_setting_without_an_exact_mapping_is_named(string attribute, long mode, long correctBias, string subject)
    {
        var e = ImportFails("flatbuffer-ce-adamw", dir => EditModel(Path.Combine(dir, "optimizer_model.onnx"), m =>
        {
            var node = m.Graph.Node.First(n => n.OpType == "AdamWOptimizer");
            node.Attribute.First(a => a.Name == attribute).I = mode;
            node.Attribute.First(a => a.Name == "correct_bias").I = correctBias;
        }));
        Assert.Equal(OrtImportErrorKind.UnmappableOptimizer, e.Kind);
        Assert.Equal(subject, e.Subject);
    }

    [Fact]
    public void An_optimizer_op_OnnxTune_does_not_run_is_named()
    {
        var e = ImportFails("flatbuffer-ce-adamw", dir => EditModel(Path.Combine(dir, "optimizer_model.onnx"), m =>
            m.Graph.Node.First(n => n.OpType == "AdamWOptimizer").OpType = "LambOptimizer"));
        Assert.Equal(OrtImportErrorKind.UnmappableOptimizer, e.Kind);
        Assert.Equal("com.microsoft.LambOptimizer", e.Subject);
    }

    [Fact]
    public void A_loss_block_the_importer_does_not_map_is_named()
    {
        var e = ImportFails("flatbuffer-ce-adamw", dir => EditModel(Path.Combine(dir, "eval_model.onnx"), m =>
            m.Graph.Node.First(n => n.OpType == "SoftmaxCrossEntropyLoss").Attribute.First(a => a.Name == "reduction").S = ByteString.CopyFromUtf8("sum")));
        Assert.Equal(OrtImportErrorKind.UnsupportedModel, e.Kind);
        Assert.Equal("SoftmaxCrossEntropyLoss.reduction", e.Subject);
    }

    [Fact]
    public void A_corrupt_or_foreign_checkpoint_is_refused()
    {
        var truncated = ImportFails("flatbuffer-ce-adamw", dir =>
        {
            var path = Path.Combine(dir, "checkpoint");
            var bytes = File.ReadAllBytes(path);
            File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        });
        Assert.Equal(OrtImportErrorKind.UnrecognizedCheckpoint, truncated.Kind);
        var pbseq = ImportFails("pbseq-mse-adamw", dir => File.WriteAllBytes(Path.Combine(dir, "checkpoint", "paramtrain_tensors.pbseq"), [5, 200, 1, 2]));
        Assert.Equal(OrtImportErrorKind.UnrecognizedCheckpoint, pbseq.Kind);
        var missing = ImportFails("pbseq-mse-adamw", dir => File.Delete(Path.Combine(dir, "optimizer_model.onnx")));
        Assert.Equal(OrtImportErrorKind.MissingFile, missing.Kind);
    }

    [Fact]
    public void Parameters_missing_from_the_checkpoint_are_named()
    {
        var e = ImportFails("pbseq-mse-adamw", dir => EditModel(Path.Combine(dir, "eval_model.onnx"), m =>
        {
            var input = m.Graph.Input.First(i => i.Name == "fc1.bias");
            input.Name = "fc1.bias_renamed";
            foreach (var n in m.Graph.Node)
                for (var i = 0; i < n.Input.Count; i++)
                    if (n.Input[i] == "fc1.bias") n.Input[i] = "fc1.bias_renamed";
        }));
        Assert.Equal(OrtImportErrorKind.ParameterMismatch, e.Kind);
        Assert.Equal("fc1.bias", e.Subject);
    }
}
