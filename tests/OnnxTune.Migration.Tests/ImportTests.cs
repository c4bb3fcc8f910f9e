using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Migration.Checkpoints;
using OnnxTune.Migration.Import;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Migration.Tests;

public sealed class ImportTests
{
    public static TheoryData<string> Folders => ["flatbuffer-ce-adamw", "pbseq-mse-adamw", "flatbuffer-ce-sgd-fresh"];

    [Theory]
    [MemberData(nameof(Folders))]
    public void Import_then_export_reproduces_the_checkpoint_parameters_bit_for_bit(string folder)
    {
        using var tmp = new TempDir();
        var reference = Fixtures.Reference(folder);
        var result = OrtArtifactImporter.Import(Fixtures.Folder(folder), tmp.Sub("artifacts"));
        Assert.Equal(reference.GetProperty("format").GetString() == "pbseq" ? OrtCheckpointFormat.ProtobufSequence : OrtCheckpointFormat.Flatbuffer, result.CheckpointFormat);

        using (var engine = TrainingEngine.Open(tmp.Sub("artifacts")))
            engine.ExportInferenceModel(tmp.Sub("exported.onnx"));
        var exported = OnnxModelReader.Load(tmp.Sub("exported.onnx")).Graph.Initializer.ToDictionary(t => t.Name);
        foreach (var p in reference.GetProperty("parameters").EnumerateObject())
        {
            var expected = Fixtures.Floats(p.Value.GetProperty("bits"));
            var actual = TensorProtos.ToFloatArray(exported[p.Name]);
            Assert.Equal(expected.Select(BitConverter.SingleToUInt32Bits), actual.Select(BitConverter.SingleToUInt32Bits));
            Assert.Equal(p.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()), exported[p.Name].Dims);
        }
        Assert.Equal(reference.GetProperty("trainable").EnumerateArray().Select(e => e.GetString()), result.Manifest.TrainableParameters.Select(p => p.Name));
    }

    [Theory]
    [MemberData(nameof(Folders))]
    public void The_imported_checkpoint_carries_moments_step_learning_rate_and_properties(string folder)
    {
        using var tmp = new TempDir();
        var reference = Fixtures.Reference(folder);
        OrtArtifactImporter.Import(Fixtures.Folder(folder), tmp.Sub("artifacts"));
        using var engine = TrainingEngine.Open(tmp.Sub("artifacts"));
        Assert.Equal(reference.GetProperty("step").GetInt64(), engine.Step);
        if (reference.GetProperty("learning_rate").ValueKind == JsonValueKind.Number)
            Assert.Equal((double)(float)reference.GetProperty("learning_rate").GetDouble(), engine.LearningRate);
        foreach (var p in reference.GetProperty("moments").EnumerateObject())
        {
            Assert.Equal(Fixtures.Floats(p.Value.GetProperty("momentum0")), engine.GetOptimizerState(p.Name + ".exp_avg"));
            Assert.Equal(Fixtures.Floats(p.Value.GetProperty("momentum1")), engine.GetOptimizerState(p.Name + ".exp_avg_sq"));
        }
        var (meta, _) = CheckpointStore.Load(Path.Combine(tmp.Sub("artifacts"), "checkpoint"));
        Assert.Equal("2", meta.UserProperties["epoch"]);
        Assert.Equal("0.875", meta.UserProperties["best_score"]);
        Assert.Equal("from ORT", meta.UserProperties["note"]);
        Assert.Contains("\"epoch\":\"int\"", meta.UserProperties[OrtArtifactImporter.PropertyTypesProperty], StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Folders))]
    public void The_imported_eval_loss_equals_the_ORT_eval_models_loss_on_the_same_batch(string folder)
    {
        using var tmp = new TempDir();
        var reference = Fixtures.Reference(folder);
        OrtArtifactImporter.Import(Fixtures.Folder(folder), tmp.Sub("artifacts"));
        var batch = reference.GetProperty("batch");
        var rows = batch.GetProperty("rows").GetInt32();
        var x = batch.GetProperty("input").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();
        var ce = reference.GetProperty("loss").GetString() == "ce";

        // The ORT eval model itself (standard ops), fed the reference parameter values as ORT's Module does.
        using var session = new InferenceSession(Path.Combine(Fixtures.Folder(folder), "eval_model.onnx"));
        var feeds = new Dictionary<string, OrtValue> { ["input"] = OrtValue.CreateTensorValueFromMemory(x, [rows, 4]) };
        foreach (var p in reference.GetProperty("parameters").EnumerateObject())
            if (session.InputNames.Contains(p.Name))
                feeds[p.Name] = OrtValue.CreateTensorValueFromMemory(Fixtures.Floats(p.Value.GetProperty("bits")), p.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
        var labels = batch.GetProperty("labels").EnumerateArray();
        feeds[ce ? "labels" : "target"] = ce
            ? OrtValue.CreateTensorValueFromMemory(labels.Select(v => v.GetInt32()).ToArray(), [rows])
            : OrtValue.CreateTensorValueFromMemory(labels.Select(v => (float)v.GetDouble()).ToArray(), [rows, 3]);
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, feeds, session.OutputNames);
        var ortLoss = outputs[0].GetTensorDataAsSpan<float>()[0];
        foreach (var v in feeds.Values) v.Dispose();

        using var engine = TrainingEngine.Open(tmp.Sub("artifacts"));
        var tb = new TrainingBatch().Add("input", x, rows, 4);
        tb = ce ? tb.WithLabels(labels.Select(v => (long)v.GetInt32()).ToArray(), rows) : tb.WithLabels(labels.Select(v => (float)v.GetDouble()).ToArray(), rows, 3);
        var onnxTuneLoss = engine.EvalStep(tb).Loss;
        // Same ops up to the loss; SoftmaxCrossEntropyLoss and OnnxTune's cross-entropy graph round differently.
        Assert.Equal(ortLoss, onnxTuneLoss, 1e-6f * Math.Max(1, Math.Abs(ortLoss)));
        Assert.Equal(batch.GetProperty("loss").GetDouble(), onnxTuneLoss, 1e-5);
    }

    [Theory]
    [MemberData(nameof(Folders))]
    public void Training_continues_from_the_ORT_state_and_the_loss_falls(string folder)
    {
        using var tmp = new TempDir();
        var reference = Fixtures.Reference(folder);
        OrtArtifactImporter.Import(Fixtures.Folder(folder), tmp.Sub("artifacts"));
        var batch = reference.GetProperty("batch");
        var rows = batch.GetProperty("rows").GetInt32();
        var x = batch.GetProperty("input").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();
        var labels = batch.GetProperty("labels").EnumerateArray();
        var tb = new TrainingBatch().Add("input", x, rows, 4);
        tb = reference.GetProperty("loss").GetString() == "ce"
            ? tb.WithLabels(labels.Select(v => (long)v.GetInt32()).ToArray(), rows)
            : tb.WithLabels(labels.Select(v => (float)v.GetDouble()).ToArray(), rows, 3);
        using var engine = TrainingEngine.Open(tmp.Sub("artifacts"));
        engine.LearningRate = engine.Manifest.Optimizer.Kind == OnnxTune.Autodiff.Artifacts.OptimizerKind.Sgd ? 0.3 : 0.05;
        var start = engine.Step;
        var first = engine.TrainStep(tb);
        engine.OptimizerStep();
        float last = first;
        for (var i = 0; i < 40; i++)
        {
            last = engine.TrainStep(tb);
            engine.OptimizerStep();
        }
        Assert.Equal(start + 41, engine.Step);
        Assert.True(last < 0.7 * first, $"loss {first} -> {last}");
    }
}
