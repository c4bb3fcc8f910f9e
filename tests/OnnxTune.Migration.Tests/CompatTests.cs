using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxTune.Migration.Tests;

/// <summary>An ORT on-device training loop (onnxruntime-training's C# API shape), ported by swapping the type names.</summary>
public sealed class CompatTests
{
    private static (float[] X, int[] Y, int Rows) Batch(string folder)
    {
        var batch = Fixtures.Reference(folder).GetProperty("batch");
        return (batch.GetProperty("input").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray(),
            batch.GetProperty("labels").EnumerateArray().Select(v => v.GetInt32()).ToArray(), batch.GetProperty("rows").GetInt32());
    }

    [Fact]
    public void An_ORT_style_training_loop_runs_saves_and_resumes()
    {
        using var tmp = new TempDir();
        var dir = Fixtures.CopyTo("flatbuffer-ce-adamw", tmp.Sub("ort"));
        var (x, y, rows) = Batch("flatbuffer-ce-adamw");

        // --- the ORT app's code, with OrtCheckpointState / OrtTrainingSession for CheckpointState / TrainingSession ---
        using var state = OrtCheckpointState.LoadCheckpoint(Path.Combine(dir, "checkpoint"));
        Assert.Equal(2L, state.GetProperty("epoch"));
        Assert.Equal(0.875f, state.GetProperty("best_score"));
        using var session = new OrtTrainingSession(state, Path.Combine(dir, "training_model.onnx"), Path.Combine(dir, "eval_model.onnx"), Path.Combine(dir, "optimizer_model.onnx"));
        session.RegisterLinearLRScheduler(2, 30, 0.05f);
        Assert.Equal(0f, session.GetLearningRate());
        var losses = new List<float>();
        for (var step = 0; step < 25; step++)
        {
            using var input = OrtValue.CreateTensorValueFromMemory(x, [rows, 4]);
            using var labels = OrtValue.CreateTensorValueFromMemory(y, [rows]);
            using var outputs = session.TrainStep([input, labels]);
            losses.Add(outputs[0].GetTensorDataAsSpan<float>()[0]);
            session.OptimizerStep();
            session.LazyResetGrad();
            session.SchedulerStep();
        }
        Assert.Equal(0.05f * (30 - 25) / (30 - 2), session.GetLearningRate(), 1e-7f); // 25 scheduler steps, past the 2-step warm-up
        state.AddProperty("epoch", 3L);
        state.AddProperty("note", "resumed");
        OrtCheckpointState.SaveCheckpoint(state, Path.Combine(dir, "checkpoint"), includeOptimizerState: true);
        session.ExportModelForInferencing(Path.Combine(dir, "inference.onnx"), ["output"]);
        // --- end of the ORT app's code ---

        Assert.True(losses[^1] < 0.7 * losses[0], $"loss {losses[0]} -> {losses[^1]}");
        Assert.Equal(3 + 25, session.Engine.Step);

        using (var inference = new InferenceSession(Path.Combine(dir, "inference.onnx")))
        using (var input = OrtValue.CreateTensorValueFromMemory(x, [rows, 4]))
        using (var runOptions = new RunOptions())
        using (var result = inference.Run(runOptions, new Dictionary<string, OrtValue> { ["input"] = input }, ["output"]))
            Assert.Equal(rows * 3, result[0].GetTensorDataAsSpan<float>().Length);

        using var reloaded = OrtCheckpointState.LoadCheckpoint(Path.Combine(dir, "checkpoint"));
        Assert.Equal(3L, reloaded.GetProperty("epoch"));
        Assert.Equal("resumed", reloaded.GetProperty("note"));
        using var again = new OrtTrainingSession(reloaded, Path.Combine(dir, "training_model.onnx"), Path.Combine(dir, "eval_model.onnx"), Path.Combine(dir, "optimizer_model.onnx"));
        Assert.Equal(28, again.Engine.Step);
        using var p1 = state.GetParameter("fc2.weight");
        using var p2 = reloaded.GetParameter("fc2.weight");
        Assert.Equal(p1.GetTensorDataAsSpan<float>().ToArray(), p2.GetTensorDataAsSpan<float>().ToArray());
    }

    [Fact]
    public void Buffers_parameters_eval_and_fixed_buffer_inputs_behave_like_ORT()
    {
        using var tmp = new TempDir();
        var dir = Fixtures.CopyTo("flatbuffer-ce-adamw", tmp.Sub("ort"));
        var (x, y, rows) = Batch("flatbuffer-ce-adamw");
        using var state = OrtCheckpointState.LoadCheckpoint(Path.Combine(dir, "checkpoint"));
        using var session = new OrtTrainingSession(state, Path.Combine(dir, "training_model.onnx"), Path.Combine(dir, "optimizer_model.onnx"));
        Assert.Equal(["input", "labels"], session.InputNames(training: true));

        using var buffer = session.ToBuffer(onlyTrainable: true);
        Assert.Equal(8 * 3 + 3, buffer.GetTensorTypeAndShape().ElementCount);
        Assert.Throws<NotSupportedException>(() => session.ToBuffer(onlyTrainable: false)); // fc1 is frozen

        using var zeros = OrtValue.CreateTensorValueFromMemory(new float[27], [27]);
        session.FromBuffer(zeros);
        using (var w = state.GetParameter("fc2.bias")) Assert.All(w.GetTensorDataAsSpan<float>().ToArray(), v => Assert.Equal(0f, v));
        session.FromBuffer(buffer);
        using (var b = session.ToBuffer(true)) Assert.Equal(buffer.GetTensorDataAsSpan<float>().ToArray(), b.GetTensorDataAsSpan<float>().ToArray());

        using var input = FixedBufferOnnxValue.CreateFromTensor(new DenseTensor<float>(x, [rows, 4]));
        using var labels = FixedBufferOnnxValue.CreateFromTensor(new DenseTensor<int>(y, [rows]));
        using var lossOut = FixedBufferOnnxValue.CreateFromTensor(new DenseTensor<float>(new float[1], []));
        session.EvalStep([input, labels], [lossOut]);
        using var named = session.TrainStep([input, labels]);
        var trainLoss = named[0].AsTensor<float>().GetValue(0);
        Assert.Equal(Fixtures.Reference("flatbuffer-ce-adamw").GetProperty("batch").GetProperty("loss").GetDouble(), trainLoss, 1e-5);
        Assert.Throws<NotSupportedException>(session.LazyResetGrad); // pending gradients: OnnxTune applies them or keeps them
        session.OptimizerStep();
        session.LazyResetGrad();

        using var update = OrtValue.CreateTensorValueFromMemory(new float[] { 1, 2, 3 }, [3]);
        state.UpdateParameter("fc2.bias", update);
        using (var b = state.GetParameter("fc2.bias")) Assert.Equal([1f, 2f, 3f], b.GetTensorDataAsSpan<float>().ToArray());
        Assert.Throws<ArgumentException>(() => state.GetProperty("missing"));
        Assert.Throws<ArgumentException>(() => session.ExportModelForInferencing(Path.Combine(dir, "x.onnx"), ["no-such-output"]));
    }
}
