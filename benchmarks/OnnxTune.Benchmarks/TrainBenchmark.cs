using System.Diagnostics;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Benchmarks.Workloads;
using OnnxTune.Training;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Benchmarks;

/// <summary>
/// Trains one workload through the public API (ArtifactBuilder + TrainingEngine) and times each step:
/// one step = TrainStep (forward + loss + backward; gradients reset lazily) + OptimizerStep (AdamW).
/// </summary>
internal static class TrainBenchmark
{
    public static object Run(WorkloadSpec spec, BenchArgs args)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"onnxtune-bench-{Environment.ProcessId}", spec.Name);
        try
        {
            BuildArtifacts(spec, dir, form: args.Form);
            GraphVariants.Apply(args.Variant, dir);
            return Measure(spec, dir, args);
        }
        finally
        {
            try { Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true); } catch (IOException) { }
        }
    }

    public static void BuildArtifacts(WorkloadSpec spec, string dir, int seed = WorkloadSpec.Seed, GraphForm form = GraphForm.Operators)
    {
        var artifacts = ArtifactBuilder.Build(WorkloadModels.For(spec, seed, form), new ArtifactOptions
        {
            Selection = new ParameterSelection { Trainable = ["*.weight", "*.bias"] },
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
            Optimizer = new OptimizerSpec
            {
                Kind = OptimizerKind.AdamW,
                LearningRate = WorkloadSpec.LearningRate,
                Beta1 = WorkloadSpec.Beta1,
                Beta2 = WorkloadSpec.Beta2,
                Epsilon = WorkloadSpec.Eps,
                WeightDecay = WorkloadSpec.WeightDecay,
            },
        });
        ArtifactBuilder.Save(artifacts, dir);
    }

    private static object Measure(WorkloadSpec spec, string dir, BenchArgs args)
    {
        // The artifacts were built in this process (users build them offline, peers build nothing): their garbage
        // is not the session's memory.
        GC.Collect(2, GCCollectionMode.Forced, blocking: true);
        var rssBeforeOpen = ProcessMemory.RssMb();
        ProcessMemory.ResetPeak();
        var sessionOptions = new TrainingEngineOptions { IntraOpThreads = WorkloadSpec.IntraOpThreads, InterOpThreads = WorkloadSpec.InterOpThreads };
        SessionVariants.Apply(args.Variant, sessionOptions);
        if (args.ProfilePrefix is { } prefix)
        {
            var configure = sessionOptions.ConfigureSessionOptions;
            sessionOptions.ConfigureSessionOptions = so =>
            {
                configure?.Invoke(so);
                // The prefix first: the EnableProfiling setter passes the current prefix to ONNX Runtime.
                so.ProfileOutputPathPrefix = $"{prefix}-{spec.Name}";
                so.EnableProfiling = true;
            };
        }
        using var session = TrainingEngine.Open(dir, sessionOptions);
        if (session.ParameterNames.Sum(n => session.GetParameter(n).LongLength) != spec.ParameterCount)
            throw new InvalidOperationException($"{spec.Name}: the ONNX model's parameter count differs from WorkloadSpec.ParameterCount ({spec.ParameterCount}).");

        var rssAfterOpen = ProcessMemory.RssMb();
        var managedAfterOpen = GC.GetTotalMemory(false) / 1048576.0;
        var batch = args.InitDirectory is { } init ? LoadInit(spec, session, Path.Combine(init, $"{spec.Name}.safetensors")) : SeededBatch(spec);
        var warmup = args.Warmup ?? WorkloadSpec.WarmupSteps;
        var steps = args.Steps ?? spec.TimedSteps;

        float lossFirst = float.NaN;
        for (var i = 0; i < warmup; i++)
        {
            var l = session.TrainStep(batch);
            session.OptimizerStep();
            if (i == 0) lossFirst = l;
        }

        var total = new double[steps];
        var trainCall = new double[steps];
        var trainRun = new double[steps];
        var optimizerRun = new double[steps];
        var allocBefore = GC.GetAllocatedBytesForCurrentThread();
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        for (var i = 0; i < steps; i++)
        {
            long trainTicks = session.TrainRunTicks, optimizerTicks = session.OptimizerRunTicks;
            var t0 = Stopwatch.GetTimestamp();
            session.TrainStep(batch);
            var t1 = Stopwatch.GetTimestamp();
            session.OptimizerStep();
            var t2 = Stopwatch.GetTimestamp();
            total[i] = Stopwatch.GetElapsedTime(t0, t2).TotalMilliseconds;
            trainCall[i] = Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds;
            trainRun[i] = (session.TrainRunTicks - trainTicks) * 1000.0 / Stopwatch.Frequency;
            optimizerRun[i] = (session.OptimizerRunTicks - optimizerTicks) * 1000.0 / Stopwatch.Frequency;
        }
        var allocPerStep = (GC.GetAllocatedBytesForCurrentThread() - allocBefore) / steps;
        // CPU time (all threads, user + system) per timed step: the work done, which the neighbours on a shared
        // machine move far less than wall time (spinning is off by default, so waiting burns none).
        var cpuMsPerStep = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalMilliseconds / steps;
        // The loss of the trained parameters, like the peers' loss_last (an eval run, not a timed step).
        var lossLast = session.EvalStep(batch).Loss;
        var median = Stats.Median(total);
        return new
        {
            System = "OnnxTune",
            Version = $"OnnxTune {typeof(TrainingEngine).Assembly.GetName().Version?.ToString(3)}, ONNX Runtime {typeof(Microsoft.ML.OnnxRuntime.InferenceSession).Assembly.GetName().Version?.ToString(3)}",
            Workload = spec.Name,
            MedianMs = Math.Round(median, 3),
            MinMs = Math.Round(total.Min(), 3),
            MaxMs = Math.Round(total.Max(), 3),
            Steps = steps,
            WarmupSteps = warmup,
            FlopsPerStep = spec.FlopsPerStep,
            GflopPerS = Math.Round(spec.FlopsPerStep / (median * 1e6), 2),
            AllocBytesPerStep = allocPerStep,
            PeakRssMb = Math.Round(ProcessMemory.PeakRssMb(), 1),
            RssBeforeOpenMb = Math.Round(rssBeforeOpen, 1),
            RssAfterOpenMb = Math.Round(rssAfterOpen, 1),
            ManagedAfterOpenMb = Math.Round(managedAfterOpen, 1),
            Threads = WorkloadSpec.IntraOpThreads,
            LossFirst = lossFirst,
            LossLast = lossLast,
            Init = args.InitDirectory is null ? "own seed" : "peer dump",
            Variant = args.Variant,
            GraphForm = spec.Kind == WorkloadKind.Head ? null : args.Form.ToString().ToLowerInvariant(),
            OptimizerExecution = session.OptimizerExecution.ToString().ToLowerInvariant(),
            TrainRunMedianMs = Math.Round(Stats.Median(trainRun), 3),
            OptimizerRunMedianMs = Math.Round(Stats.Median(optimizerRun), 3),
            BookkeepingMedianMs = Math.Round(Stats.Median(total.Select((t, i) => t - trainRun[i] - optimizerRun[i])), 3),
            TrainStepMedianMs = Math.Round(Stats.Median(trainCall), 3),
            CpuMsPerStep = Math.Round(cpuMsPerStep, 3),
        };
    }

    private static TrainingBatch SeededBatch(WorkloadSpec spec)
    {
        var rng = new Random(WorkloadSpec.Seed);
        var tokens = spec.Batch * spec.SequenceLength;
        var input = new float[tokens * WorkloadSpec.Hidden];
        for (var i = 0; i < input.Length; i++)
            input[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        var labels = Enumerable.Range(0, spec.Batch).Select(_ => (long)rng.Next(WorkloadSpec.Classes)).ToArray();
        return MakeBatch(spec, input, Enumerable.Repeat(1f, tokens).ToArray(), labels);
    }

    private static TrainingBatch MakeBatch(WorkloadSpec spec, float[] input, float[] mask, long[] labels) =>
        spec.Kind == WorkloadKind.Head
            ? new TrainingBatch().Add("input", input, spec.Batch, WorkloadSpec.Hidden).WithLabels(labels, spec.Batch)
            : new TrainingBatch()
                .Add("input", input, spec.Batch, spec.SequenceLength, WorkloadSpec.Hidden)
                .Add("attention_mask", mask, spec.Batch, spec.SequenceLength)
                .WithLabels(labels, spec.Batch);

    /// <summary>
    /// Copies the peer's initial weights (TorchSharp <c>--dump-init</c>) into the session and returns its batch.
    /// The dump holds PyTorch Linear weights as [out, in]; the encoder's MatMul weights are [in, out], so those are
    /// transposed. The W1 head (Gemm transB=1) and the classifier use [out, in] as they are. Names match the dump.
    /// </summary>
    private static TrainingBatch LoadInit(WorkloadSpec spec, TrainingEngine session, string path)
    {
        if (!File.Exists(path))
            throw new ArgumentException($"--init: '{path}' does not exist (write it with OnnxTune.Benchmarks.TorchSharp --dump-init DIR)");
        var file = SafeTensorsFile.Read(path);
        var names = session.ParameterNames.ToHashSet(StringComparer.Ordinal);
        foreach (var tensor in file.Tensors)
        {
            if (tensor.Name is "input" or "attention_mask" or "labels") continue;
            if (!names.Remove(tensor.Name))
                throw new ArgumentException($"--init: '{path}' holds '{tensor.Name}', which the {spec.Name} ONNX model has no trainable parameter for");
            var values = tensor.ToFloatArray();
            var transpose = spec.Kind == WorkloadKind.Encoder && tensor.Shape.Length == 2 && !tensor.Name.StartsWith("classifier.", StringComparison.Ordinal);
            session.SetParameter(tensor.Name, transpose ? Transpose(values, (int)tensor.Shape[0], (int)tensor.Shape[1]) : values);
        }
        if (names.Count > 0)
            throw new ArgumentException($"--init: '{path}' lacks {string.Join(", ", names)}");
        var tokens = spec.Batch * spec.SequenceLength;
        var mask = file.Find("attention_mask")?.ToFloatArray() ?? Enumerable.Repeat(1f, tokens).ToArray();
        return MakeBatch(spec, file.Get("input").ToFloatArray(), mask, file.Get("labels").ToInt64Array());
    }

    private static float[] Transpose(float[] m, int rows, int cols)
    {
        var t = new float[m.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++)
                t[c * rows + r] = m[r * cols + c];
        return t;
    }
}
