// The "after" listing of docs/migrating-from-ort-training.md, compiled and run: the ORT app's code unchanged, with the
// two alias lines below. Microsoft.ML.OnnxRuntime 1.31 still ships (disabled) CheckpointState and TrainingSession
// types; a using alias takes precedence over types of an imported namespace, so the names resolve to OnnxTune's.
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using CheckpointState = OnnxTune.Migration.OrtCheckpointState;
using TrainingSession = OnnxTune.Migration.OrtTrainingSession;

namespace OnnxTune.Migration.Tests;

public sealed class MigrationGuideListing
{
    // --- listing start ---
    public static float TrainOnDevice(string artifacts, float[] images, int[] labels, int rows, int epochs)
    {
        using var state = CheckpointState.LoadCheckpoint(Path.Combine(artifacts, "checkpoint"));
        using var session = new TrainingSession(state,
            Path.Combine(artifacts, "training_model.onnx"),
            Path.Combine(artifacts, "eval_model.onnx"),
            Path.Combine(artifacts, "optimizer_model.onnx"));
        session.SetLearningRate(0.05f);
        float loss = 0;
        for (var epoch = 0; epoch < epochs; epoch++)
        {
            using var input = FixedBufferOnnxValue.CreateFromTensor(new DenseTensor<float>(images, new[] { rows, 4 }));
            using var target = FixedBufferOnnxValue.CreateFromTensor(new DenseTensor<int>(labels, new[] { rows }));
            using var outputs = session.TrainStep(new[] { input, target });
            loss = outputs.ElementAtOrDefault(0)!.AsTensor<float>().GetValue(0);
            session.OptimizerStep();
            session.LazyResetGrad();
        }
        state.AddProperty("epochs_trained", (long)epochs);
        CheckpointState.SaveCheckpoint(state, Path.Combine(artifacts, "checkpoint"));
        session.ExportModelForInferencing(Path.Combine(artifacts, "inference_model.onnx"), new[] { "output" });
        return loss;
    }
    // --- listing end ---

    [Fact]
    public void The_guides_after_listing_trains_an_ORT_folder()
    {
        Assert.Equal(typeof(OrtTrainingSession), typeof(TrainingSession));
        using var tmp = new TempDir();
        var dir = Fixtures.CopyTo("flatbuffer-ce-adamw", tmp.Sub("ort"));
        var batch = Fixtures.Reference("flatbuffer-ce-adamw").GetProperty("batch");
        var x = batch.GetProperty("input").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();
        var y = batch.GetProperty("labels").EnumerateArray().Select(v => v.GetInt32()).ToArray();
        var first = TrainOnDevice(dir, x, y, 8, 1);
        var later = TrainOnDevice(dir, x, y, 8, 20); // resumes from the checkpoint the first call saved
        Assert.True(later < first, $"{first} -> {later}");
        Assert.True(File.Exists(Path.Combine(dir, "inference_model.onnx")));
        using var state = CheckpointState.LoadCheckpoint(Path.Combine(dir, "checkpoint"));
        Assert.Equal(20L, state.GetProperty("epochs_trained"));
    }
}
