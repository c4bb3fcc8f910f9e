using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Cli.Tests;

/// <summary>Bad inputs through the CLI: a non-zero exit and a message that names the problem.</summary>
public sealed class BadInputTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly ParityCase _case = ParityCase.Load("b_mlp_ce_adamw");

    public BadInputTests() => _dir.CopyFrom(_case.Folder);

    public void Dispose() => _dir.Dispose();

    private CliRun Run(params string[] args) => CliRunner.Run(_dir.Path, args);

    private void BuildArtifacts() => Run(_case.Command("artifacts")).Expect(0);

    private CliRun TrainOn(string data) => Run("train", "artifacts", "--data", data, "--out", "trained", "--batch-size", "8", "--no-shuffle");

    private SafeTensorsFile Data => SafeTensorsFile.Read(_dir["data.safetensors"]);

    private void WriteData(string file, params SafeTensor[] tensors) => new SafeTensorsFile(tensors).Write(_dir[file]);

    [Fact]
    public void Corrupt_onnx_file_is_refused_naming_the_file()
    {
        File.WriteAllText(_dir["garbage.onnx"], "this is not a protobuf model at all");
        Run("artifacts", "garbage.onnx", "--out", "x").ExpectFailure("garbage.onnx");
        Run("inspect", "garbage.onnx").ExpectFailure("garbage.onnx");
        Run("check", "garbage.onnx").Expect(2).ExpectFailure("garbage.onnx");
    }

    [Fact]
    public void Truncated_onnx_file_is_refused_naming_the_file()
    {
        var bytes = File.ReadAllBytes(_dir["model.onnx"]);
        File.WriteAllBytes(_dir["truncated.onnx"], bytes[..(bytes.Length / 2)]);
        Run("artifacts", "truncated.onnx", "--out", "x").ExpectFailure("truncated.onnx");
    }

    [Fact]
    public void Missing_model_file_is_refused()
    {
        Run("artifacts", "nope.onnx", "--out", "x").ExpectFailure("nope.onnx");
    }

    [Fact]
    public void Opset_10_model_is_refused_with_upgrade_advice()
    {
        var model = OnnxTune.Onnx.ModelIO.OnnxModelReader.Load(Path.Combine(Repo.Fixtures, "check", "mlp_opset11.onnx"));
        foreach (var o in model.OpsetImport) if (string.IsNullOrEmpty(o.Domain)) o.Version = 10;
        OnnxTune.Onnx.ModelIO.OnnxModelWriter.Save(model, _dir["old.onnx"]);
        Run("artifacts", "old.onnx", "--out", "x").ExpectFailure("opset 10", "11 and 12 are upgraded", "version_converter");
    }

    [Fact]
    public void Opset_11_model_is_upgraded_with_a_note()
    {
        File.Copy(Path.Combine(Repo.Fixtures, "check", "mlp_opset11.onnx"), _dir["old.onnx"]);
        var run = Run("artifacts", "old.onnx", "--out", "x", "--loss", "mse").Expect(0);
        Assert.Contains("upgraded to opset 13", run.Out, StringComparison.Ordinal);
        var inference = OnnxTune.Onnx.ModelIO.OnnxModelReader.Load(Path.Combine(_dir["x"], "inference_model.onnx"));
        Assert.Equal(13, inference.OpsetImport.Single(o => string.IsNullOrEmpty(o.Domain)).Version);
        Assert.Contains("upgraded to opset 13", Run("inspect", "old.onnx").Expect(0).Out, StringComparison.Ordinal);
    }

    [Fact]
    public void Glob_matching_nothing_is_refused_naming_the_glob()
    {
        Run("artifacts", "model.onnx", "--out", "x", "--frozen", "encoder.*").ExpectFailure("--frozen 'encoder.*'");
        Run("artifacts", "model.onnx", "--out", "x", "--trainable", "fc9.*").ExpectFailure("--trainable 'fc9.*'");
    }

    [Fact]
    public void Unknown_loss_output_and_optimizer_flag_mismatches_are_refused()
    {
        Run("artifacts", "model.onnx", "--out", "x", "--loss", "hinge").ExpectFailure("hinge");
        Run("artifacts", "model.onnx", "--out", "x", "--loss-output", "probs").ExpectFailure("probs");
        Run("artifacts", "model.onnx", "--out", "x", "--optimizer", "adamw", "--momentum", "0.9").ExpectFailure("--momentum", "adamw");
        Run("artifacts", "model.onnx", "--out", "x", "--optimizer", "sgd", "--beta1", "0.8").ExpectFailure("--beta1", "sgd");
        Run("artifacts", "model.onnx", "--out", "x", "--lr", "-1").ExpectFailure("learning rate");
    }

    [Fact]
    public void Missing_data_tensor_is_named()
    {
        BuildArtifacts();
        WriteData("no_x.safetensors", Data.Get("labels"));
        TrainOn("no_x.safetensors").ExpectFailure("no tensor 'x'", "labels");
        WriteData("no_labels.safetensors", Data.Get("x"));
        TrainOn("no_labels.safetensors").ExpectFailure("no tensor 'labels'");
        Assert.False(Directory.Exists(_dir["trained"]));
    }

    [Fact]
    public void Sample_count_mismatch_names_both_tensors()
    {
        BuildArtifacts();
        var labels = Data.Get("labels").ToInt64Array();
        WriteData("short.safetensors", Data.Get("x"), SafeTensor.FromInt64s("labels", labels.AsSpan(0, 36), 36));
        TrainOn("short.safetensors").ExpectFailure("'x' has 37", "'labels' has 36");
    }

    [Fact]
    public void Wrong_feature_width_and_label_type_are_named()
    {
        BuildArtifacts();
        WriteData("wide.safetensors", SafeTensor.FromFloats("x", new float[37 * 9], 37, 9), Data.Get("labels"));
        TrainOn("wide.safetensors").ExpectFailure("'x'", "fixes it to 8");
        WriteData("floatlabels.safetensors", Data.Get("x"), SafeTensor.FromFloats("labels", new float[37], 37));
        TrainOn("floatlabels.safetensors").ExpectFailure("'labels'", "int64");
    }

    [Fact]
    public void NaN_in_the_data_is_named_with_its_sample()
    {
        BuildArtifacts();
        var x = Data.Get("x").ToFloatArray();
        x[8 * 20 + 3] = float.NaN;
        WriteData("nan.safetensors", SafeTensor.FromFloats("x", x, 37, 8), Data.Get("labels"));
        TrainOn("nan.safetensors").ExpectFailure("'x'", "NaN", "sample 20");
    }

    [Fact]
    public void Label_outside_the_classes_is_named()
    {
        BuildArtifacts();
        var labels = Data.Get("labels").ToInt64Array();
        labels[10] = 7;
        WriteData("badlabel.safetensors", Data.Get("x"), SafeTensor.FromInt64s("labels", labels, 37));
        TrainOn("badlabel.safetensors").ExpectFailure("Label 7", "4 classes");
    }

    [Fact]
    public void Diverging_training_stops_with_a_non_finite_loss_error()
    {
        BuildArtifacts();
        var x = Data.Get("x").ToFloatArray().Select(v => v * 1e30f).ToArray();
        WriteData("huge.safetensors", SafeTensor.FromFloats("x", x, 37, 8), Data.Get("labels"));
        Run("train", "artifacts", "--data", "huge.safetensors", "--out", "trained", "--batch-size", "8", "--epochs", "3", "--lr", "1e6")
            .ExpectFailure("loss is", "epoch");
        Assert.False(File.Exists(_dir["trained/model.onnx"]));
    }

    [Fact]
    public void Checkpoint_of_other_artifacts_is_refused_naming_the_mismatch()
    {
        BuildArtifacts();
        // Case a: same model, SGD with momentum — its checkpoint holds momentum buffers instead of AdamW state.
        var other = ParityCase.Load("a_mlp_ce_sgd_momentum");
        var args = other.Command("artifacts");
        args[Array.IndexOf(args, "--out") + 1] = "sgd_artifacts";
        Run(args).Expect(0);
        foreach (var f in Directory.GetFiles(_dir["sgd_artifacts/checkpoint"]))
            File.Copy(f, Path.Combine(_dir["artifacts/checkpoint"], Path.GetFileName(f)), overwrite: true);
        TrainOn("data.safetensors").ExpectFailure("checkpoint");
        Run("export", "artifacts", "--out", "m.onnx").ExpectFailure("checkpoint");
    }

    [Fact]
    public void Bad_train_and_export_arguments_are_refused()
    {
        BuildArtifacts();
        Run("train", "artifacts", "--data", "data.safetensors", "--out", "t", "--epochs", "0").ExpectFailure("--epochs");
        Run("train", "artifacts", "--data", "data.safetensors", "--out", "t", "--batch-size", "0").ExpectFailure("--batch-size");
        Run("train", "model.onnx", "--data", "data.safetensors", "--out", "t").ExpectFailure("manifest.json");
        Run("train", "artifacts", "--data", "missing.safetensors", "--out", "t").ExpectFailure("missing.safetensors");
        Run("export", ".", "--out", "m.onnx").ExpectFailure("neither an artifacts folder");
        Run("train", "artifacts", "--out", "t").ExpectFailure("--data");
    }
}
