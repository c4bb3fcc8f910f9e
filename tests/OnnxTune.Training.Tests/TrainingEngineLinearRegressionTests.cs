using OnnxTune.Training.Sessions;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.Tests.TestUtilities;
using static OnnxTune.Training.Tests.TestUtilities.LinearRegressionArtifacts;

namespace OnnxTune.Training.Tests;

public sealed class TrainingEngineLinearRegressionTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Artifacts(OptimizerSpec spec, string name = "artifacts")
    {
        var path = _dir.Combine(name);
        Create(path, spec);
        return path;
    }

    private static readonly OptimizerSpec PlainSgd = new() { Kind = OptimizerKind.Sgd, WeightDecay = 0, LearningRate = 0.1 };

    private static (float[] X, float[] T) Data(int seed, int batch)
    {
        var rng = new Random(seed);
        var x = Enumerable.Range(0, batch * In).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var t = new float[batch * Out];
        for (var i = 0; i < batch; i++)
        {
            t[i * Out] = 2 * x[i * In] - x[i * In + 1] + 0.5f;
            t[i * Out + 1] = x[i * In + 2] - 0.25f;
        }
        return (x, t);
    }

    private static TrainingBatch Batch(int seed, int batch)
    {
        var (x, t) = Data(seed, batch);
        return new TrainingBatch().Add("x", x, batch, In).WithLabels(t, batch, Out);
    }

    private static double[] D(float[] f) => Array.ConvertAll(f, x => (double)x);

    [Fact]
    public void Train_step_gives_reference_loss_and_sgd_update()
    {
        using var s = TrainingEngine.Open(Artifacts(PlainSgd));
        Assert.Equal(InitialW, s.GetParameter("W"));
        var (x, t) = Data(1, 5);
        var loss = s.TrainStep(new TrainingBatch().Add("x", x, 5, In).WithLabels(t, 5, Out));
        var (refLoss, gw, gb) = Reference(D(InitialW), D(InitialB), x, t, 5);
        Assert.Equal(refLoss, loss, 5);
        s.OptimizerStep();
        Assert.Equal(1, s.Step);
        var w = s.GetParameter("W");
        for (var i = 0; i < w.Length; i++) Assert.Equal(InitialW[i] - 0.1 * gw[i], w[i], 5);
        var b = s.GetParameter("b");
        for (var i = 0; i < b.Length; i++) Assert.Equal(InitialB[i] - 0.1 * gb[i], b[i], 5);
    }

    [Fact]
    public void Gradients_accumulate_until_the_optimizer_step_then_reset()
    {
        using var s = TrainingEngine.Open(Artifacts(PlainSgd));
        var (x1, t1) = Data(1, 4);
        var (x2, t2) = Data(2, 7); // a different batch size: the batch dim is symbolic
        var (x3, t3) = Data(3, 3);
        s.TrainStep(new TrainingBatch().Add("x", x1, 4, In).WithLabels(t1, 4, Out));
        s.TrainStep(new TrainingBatch().Add("x", x2, 7, In).WithLabels(t2, 7, Out));
        Assert.Equal(2, s.AccumulatedSteps);
        s.OptimizerStep();
        var w = D(InitialW);
        var b = D(InitialB);
        var r1 = Reference(w, b, x1, t1, 4);
        var r2 = Reference(w, b, x2, t2, 7);
        for (var i = 0; i < w.Length; i++) w[i] -= 0.1 * (r1.GradW[i] + r2.GradW[i]);
        for (var i = 0; i < b.Length; i++) b[i] -= 0.1 * (r1.GradB[i] + r2.GradB[i]);
        AssertClose(w, s.GetParameter("W"));

        // The next step starts a fresh accumulation (lazy reset), not on top of the old sum.
        s.TrainStep(new TrainingBatch().Add("x", x3, 3, In).WithLabels(t3, 3, Out));
        s.OptimizerStep();
        var r3 = Reference(w, b, x3, t3, 3);
        for (var i = 0; i < w.Length; i++) w[i] -= 0.1 * r3.GradW[i];
        for (var i = 0; i < b.Length; i++) b[i] -= 0.1 * r3.GradB[i];
        AssertClose(w, s.GetParameter("W"));
        AssertClose(b, s.GetParameter("b"));
        Assert.Throws<InvalidOperationException>(s.OptimizerStep);
    }

    [Theory]
    [InlineData(OptimizerExecution.Fused)]
    [InlineData(OptimizerExecution.Graph)]
    public void The_second_gradient_buffers_exist_only_once_gradients_accumulate(OptimizerExecution execution)
    {
        using var s = TrainingEngine.Open(Artifacts(PlainSgd), new TrainingEngineOptions { OptimizerExecution = execution });
        var parameterBytes = (InitialW.Length + InitialB.Length) * sizeof(float);
        var w = D(InitialW);
        var b = D(InitialB);
        void Update(params (float[] X, float[] T, int N)[] batches)
        {
            var grads = batches.Select(p => Reference(w, b, p.X, p.T, p.N)).ToList();
            foreach (var g in grads)
            {
                for (var i = 0; i < w.Length; i++) w[i] -= 0.1 * g.GradW[i];
                for (var i = 0; i < b.Length; i++) b[i] -= 0.1 * g.GradB[i];
            }
        }
        (float[] X, float[] T, int N) Make(int seed, int n) { var (x, t) = Data(seed, n); return (x, t, n); }
        void Train(params (float[] X, float[] T, int N)[] batches)
        {
            foreach (var p in batches) s.TrainStep(new TrainingBatch().Add("x", p.X, p.N, In).WithLabels(p.T, p.N, Out));
            s.OptimizerStep();
            Update(batches);
            AssertClose(w, s.GetParameter("W"));
            AssertClose(b, s.GetParameter("b"));
        }

        Train(Make(1, 4));
        Train(Make(2, 5));
        var beforeAccumulating = s.TensorBytes;
        // Each round below starts from the other gradient buffer than the one before it.
        Train(Make(3, 3), Make(4, 6));
        Assert.Equal(beforeAccumulating + parameterBytes, s.TensorBytes);
        Train(Make(5, 2));
        Train(Make(6, 4), Make(7, 3), Make(8, 5));
        Train(Make(9, 4), Make(10, 2));
        Assert.Equal(beforeAccumulating + parameterBytes, s.TensorBytes);
    }

    [Fact]
    public void Opening_collects_once_after_a_large_transient_allocation_only()
    {
        Assert.False(LoadMemoryRelease.AfterOpen(GC.GetTotalAllocatedBytes(precise: false)));
        Assert.True(LoadMemoryRelease.AfterOpen(GC.GetTotalAllocatedBytes(precise: false) - LoadMemoryRelease.ThresholdBytes - 1));
        Assert.True(new TrainingEngineOptions().ReleaseLoadMemory);
    }

    private static void AssertClose(double[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 5);
    }

    [Fact]
    public void Loss_falls_and_eval_matches_exported_model()
    {
        var dir = Artifacts(new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 0.05 });
        using var s = TrainingEngine.Open(dir);
        var first = s.EvalStep(Batch(99, 16)).Loss;
        for (var i = 0; i < 60; i++)
        {
            s.TrainStep(Batch(i, 16));
            s.OptimizerStep();
        }
        var eval = s.EvalStep(Batch(99, 16));
        Assert.True(eval.Loss < first / 10, $"loss {first} -> {eval.Loss}");
        var y = eval.Outputs["y"];
        Assert.Equal([16L, 2L], y.Shape);

        var exported = _dir.Combine("export", "model.onnx");
        s.ExportInferenceModel(exported);
        using var inference = new InferenceSession(exported);
        var (x, _) = Data(99, 16);
        using var input = OrtValue.CreateTensorValueFromMemory(x, [16, In]);
        using var outputs = inference.Run(new RunOptions(), ["x"], [input], ["y"]);
        Assert.Equal(y.AsFloats(), outputs[0].GetTensorDataAsSpan<float>().ToArray());
        var model = OnnxTune.Onnx.ModelIO.OnnxModelReader.Load(exported);
        Assert.Equal(s.GetParameter("W"), OnnxTune.Onnx.Tensors.TensorProtos.ToFloatArray(model.Graph.Initializer.Single(t => t.Name == "W")));
    }

    [Fact]
    public void Save_load_continue_gives_the_losses_of_an_unbroken_run()
    {
        var spec = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 0.05, MaxGradNorm = 0.5 };
        var dir = Artifacts(spec);
        var schedule = LearningRateSchedules.LinearWithWarmup(0.05, 2, 10);

        float[] Run(TrainingEngine s, int from, int to)
        {
            var losses = new List<float>();
            for (var i = from; i < to; i++)
            {
                losses.Add(s.TrainStep(Batch(i, 8)));
                losses.Add(s.TrainStep(Batch(100 + i, 8)));
                s.OptimizerStep();
            }
            return [.. losses];
        }

        float[] unbroken;
        using (var s = TrainingEngine.Open(dir))
        {
            s.Schedule = schedule;
            unbroken = Run(s, 0, 8);
        }
        var ckpt = _dir.Combine("ckpt");
        float[] firstHalf;
        using (var s = TrainingEngine.Open(dir))
        {
            s.Schedule = schedule;
            firstHalf = Run(s, 0, 4);
            s.SaveCheckpoint(ckpt, new Dictionary<string, string> { ["epoch"] = "1" });
        }
        using (var s = TrainingEngine.Open(dir, new TrainingEngineOptions { CheckpointDirectory = ckpt, IntraOpThreads = 1 }))
        {
            Assert.Equal(4, s.Step);
            Assert.NotNull(s.Schedule);
            Assert.Equal(schedule.LearningRateAt(4), s.LearningRate);
            Assert.Equal("1", s.LoadCheckpoint(ckpt)["epoch"]);
            var secondHalf = Run(s, 4, 8);
            Assert.Equal(unbroken, firstHalf.Concat(secondHalf).ToArray());
        }
        var meta = CheckpointStore.Load(ckpt).Metadata;
        Assert.Equal(["W", "b"], meta.Parameters.Select(p => p.Name));
        Assert.Equal(["W.exp_avg", "W.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq"], meta.OptimizerStates.Select(p => p.Name));
        Assert.Equal(OptimizerKind.AdamW, meta.Optimizer.Kind);
        Assert.Equal("linear", meta.Schedule!.Kind);
    }

    [Fact]
    public void Learning_rate_is_a_graph_input_and_can_change_between_steps()
    {
        using var s = TrainingEngine.Open(Artifacts(PlainSgd));
        Assert.Equal(0.1, s.LearningRate);
        s.LearningRate = 0;
        s.TrainStep(Batch(1, 4));
        s.OptimizerStep();
        Assert.Equal(InitialW, s.GetParameter("W"));
        s.Schedule = LearningRateSchedules.Constant(0.2);
        Assert.Throws<InvalidOperationException>(() => s.LearningRate = 0.3);
        Assert.Equal(0.2, s.LearningRate);
    }

    [Fact]
    public void Mismatched_checkpoints_are_refused_naming_the_first_mismatch()
    {
        var adam = Artifacts(new OptimizerSpec { Kind = OptimizerKind.AdamW }, "adam");
        var sgd = Artifacts(new OptimizerSpec { Kind = OptimizerKind.Sgd, Momentum = 0.9, WeightDecay = 0 }, "sgd");
        var ckpt = _dir.Combine("ckpt");
        using (var s = TrainingEngine.Open(adam)) s.SaveCheckpoint(ckpt);

        using (var s = TrainingEngine.Open(sgd))
        {
            var e = Assert.Throws<CheckpointMismatchException>(() => s.LoadCheckpoint(ckpt));
            Assert.Contains("AdamW", e.Message);
            Assert.Contains("Sgd", e.Message);
        }
        Assert.Throws<CheckpointMismatchException>(() => TrainingEngine.Open(sgd, new TrainingEngineOptions { CheckpointDirectory = ckpt }));

        // A checkpoint whose W has another shape.
        var (meta, tensors) = CheckpointStore.Load(ckpt);
        var bad = _dir.Combine("bad");
        CheckpointStore.Save(bad, meta with { Parameters = [new CheckpointTensor("W", "float", [3, 3]), meta.Parameters[1]] },
            tensors.Tensors.Select(t => t.Name == "W" ? SafeTensor.FromFloats("W", new float[9], 3, 3) : t));
        using (var s = TrainingEngine.Open(adam))
        {
            var e = Assert.Throws<CheckpointMismatchException>(() => s.LoadCheckpoint(bad));
            Assert.Contains("'W'", e.Message);
            Assert.Contains("[3,3]", e.Message);
            Assert.Contains("[3,2]", e.Message);
        }

        // A checkpoint lacking a parameter.
        var missing = _dir.Combine("missing");
        CheckpointStore.Save(missing, meta with { Parameters = [meta.Parameters[0]] }, tensors.Tensors.Where(t => t.Name != "b"));
        using (var s = TrainingEngine.Open(adam))
            Assert.Contains("'b'", Assert.Throws<CheckpointMismatchException>(() => s.LoadCheckpoint(missing)).Message);

        // tensors.safetensors replaced after checkpoint.json was written: detected.
        File.Copy(Path.Combine(bad, CheckpointStore.TensorsFileName), Path.Combine(ckpt, CheckpointStore.TensorsFileName), overwrite: true);
        using (var s = TrainingEngine.Open(adam))
            Assert.Contains("interrupted", Assert.Throws<CheckpointFormatException>(() => s.LoadCheckpoint(ckpt)).Message);
        Assert.Throws<CheckpointFormatException>(() => CheckpointStore.Load(_dir.Combine("nowhere")));
    }

    [Fact]
    public void Bad_batches_get_typed_errors_naming_the_input()
    {
        using var s = TrainingEngine.Open(Artifacts(PlainSgd));
        var (x, t) = Data(1, 4);

        BatchValidationException Fail(TrainingBatch b) => Assert.Throws<BatchValidationException>(() => s.TrainStep(b));

        var e = Fail(new TrainingBatch().WithLabels(t, 4, Out));
        Assert.Equal("x", e.InputName);
        Assert.Contains("no input 'x'", e.Message);
        Assert.Contains("labels", Fail(new TrainingBatch().Add("x", x, 4, In)).Message);
        Assert.Contains("rank", Fail(new TrainingBatch().Add("x", x, 12).WithLabels(t, 4, Out)).Message);
        Assert.Contains("fixes it to 3", Fail(new TrainingBatch().Add("x", x, 6, 2).WithLabels(t, 4, Out)).Message);
        Assert.Contains("Int64", Fail(new TrainingBatch().Add("x", new long[12], 4, In).WithLabels(t, 4, Out)).Message);
        Assert.Contains("needs 15", Fail(new TrainingBatch().Add("x", x, 5, In).WithLabels(new float[10], 5, Out)).Message);
        var (x3, t3) = Data(2, 3);
        var batchMismatch = Fail(new TrainingBatch().Add("x", x, 4, In).WithLabels(t3, 3, Out));
        Assert.Equal("labels", batchMismatch.InputName);
        Assert.Contains("'x' has 4", batchMismatch.Message);
        var nan = (float[])x.Clone();
        nan[7] = float.NaN;
        Assert.Contains("NaN at flat index 7", Fail(new TrainingBatch().Add("x", nan, 4, In).WithLabels(t, 4, Out)).Message);
        var inf = (float[])t.Clone();
        inf[2] = float.PositiveInfinity;
        Assert.Equal("labels", Fail(new TrainingBatch().Add("x", x, 4, In).WithLabels(inf, 4, Out)).InputName);
        Assert.Contains("'z'", Fail(new TrainingBatch().Add("x", x, 4, In).Add("z", x, 4, In).WithLabels(t, 4, Out)).Message);
        Assert.Equal(0, s.AccumulatedSteps);
        // The session is still usable after refused batches.
        Assert.True(float.IsFinite(s.TrainStep(new TrainingBatch().Add("x", x, 4, In).WithLabels(t, 4, Out))));
    }

    [Fact]
    public void Cuda_on_a_cpu_build_is_a_typed_error_and_disposal_is_final()
    {
        var dir = Artifacts(PlainSgd);
        var e = Assert.Throws<ExecutionProviderUnavailableException>(() => TrainingEngine.Open(dir, new TrainingEngineOptions { ExecutionProvider = ExecutionProvider.Cuda }));
        Assert.Contains("CUDA", e.Message);
        var s = TrainingEngine.Open(dir);
        s.Dispose();
        s.Dispose();
        Assert.Throws<ObjectDisposedException>(() => s.TrainStep(Batch(1, 2)));
        Assert.Throws<ObjectDisposedException>(() => s.GetParameter("W"));
        Assert.Contains("'nope'", Assert.Throws<OnnxTuneException>(() => { using var t = TrainingEngine.Open(dir); t.GetParameter("nope"); }).Message);
    }

    [Fact]
    public void Rebinding_inputs_before_each_run_gives_the_same_training()
    {
        var dir = Artifacts(new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 0.05 });
        float[] Run(bool rebind)
        {
            using var s = TrainingEngine.Open(dir, new TrainingEngineOptions { RebindInputsEachRun = rebind });
            var losses = new List<float>();
            for (var i = 0; i < 5; i++)
            {
                losses.Add(s.TrainStep(Batch(i, 8)));
                losses.Add(s.EvalStep(Batch(50, 4)).Loss);
                s.OptimizerStep();
            }
            return [.. losses, .. s.GetParameter("W")];
        }
        Assert.Equal(Run(false), Run(true));
    }

    [Fact]
    public void Seed_makes_random_ops_repeatable()
    {
        var dir = _dir.Combine("dropout");
        Create(dir, PlainSgd, trainingDropout: true);
        float[] Losses(int? seed)
        {
            using var s = TrainingEngine.Open(dir, new TrainingEngineOptions { Seed = seed });
            return Enumerable.Range(0, 4).Select(_ => s.TrainStep(Batch(1, 16))).ToArray();
        }
        var a = Losses(5);
        Assert.Equal(a, Losses(5));
        Assert.NotEqual(a, Losses(6));
        Assert.True(a.Distinct().Count() > 1, "the dropout mask should change from step to step");
    }

    [Fact]
    public void Artifacts_missing_a_graph_or_manifest_are_refused()
    {
        Assert.ThrowsAny<OnnxTuneException>(() => TrainingEngine.Open(_dir.Combine("empty")));
        var dir = Artifacts(PlainSgd);
        File.Delete(Path.Combine(dir, "optimizer_model.onnx"));
        Assert.Contains("optimizer_model.onnx", Assert.Throws<InvalidArtifactsException>(() => TrainingEngine.Open(dir)).Message);
    }
}
