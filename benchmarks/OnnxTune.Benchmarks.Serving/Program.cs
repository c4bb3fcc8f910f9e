using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Benchmarks;
using OnnxTune.Benchmarks.Workloads;
using OnnxTune.Hosting;
using OnnxTune.Training;
using OnnxTune.Training.Sessions;

// Serving under training (issue 5): p50/p99 latency of IModelHandle.Predict (the hosted, swappable session) with
// the app idle, while a fine-tuning loop runs in the background with the default thread budget
// (OnDeviceFineTuningOptions.TrainingThreads), across swaps (ModelVersionStore.RollbackAsync every N ms), and both.
// The served model is W2's architecture (one MiniLM-sized BERT layer + classifier); a request is one sequence.
// The background trainer runs as a hosted round does: a dedicated thread at OnDeviceFineTuningOptions.TrainingNiceness.
// usage: [--requests N] [--think-ms N] [--swap-ms N] [--seq N] [--inference-threads N (OnDeviceFineTuningOptions.InferenceThreads; 0 = cores − training)]
//        [--training-niceness N (0 = the trainer at the app's priority, as before issue 14)]
//        [--training-idle -1|0|1 (OnDeviceFineTuningOptions.TrainingIdlePriority: -1 automatic, the default; 0 off; 1 on)]
var requests = Int("--requests", 1000);
var thinkMs = Int("--think-ms", 2);
var swapMs = Int("--swap-ms", 250);
var seq = Int("--seq", 64);
var inferenceThreads = Int("--inference-threads", 0);
var trainingNiceness = Int("--training-niceness", new OnDeviceFineTuningOptions().TrainingNiceness);
var trainingIdleFlag = Int("--training-idle", -1); // -1: the library's automatic choice; 0 off; 1 on
var json = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

var root = Path.Combine(Path.GetTempPath(), $"onnxtune-bench-serving-{Environment.ProcessId}");
try
{
    var artifacts = Path.Combine(root, "artifacts");
    ArtifactBuilder.Save(ArtifactBuilder.Build(WorkloadModels.For(WorkloadSpec.W2, WorkloadSpec.Seed), new ArtifactOptions
    {
        Selection = new ParameterSelection { Trainable = ["*.weight", "*.bias"] },
        Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
        Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = WorkloadSpec.LearningRate, WeightDecay = WorkloadSpec.WeightDecay },
    }), artifacts);

    var services = new ServiceCollection();
    services.AddOnDeviceFineTuning(o =>
    {
        o.ArtifactsPath = artifacts;
        o.ModelStorePath = Path.Combine(root, "store");
        o.InferenceThreads = inferenceThreads;
    });
    using var provider = services.BuildServiceProvider();
    var handle = provider.GetRequiredService<IModelHandle>();
    var versions = provider.GetRequiredService<ModelVersionStore>();
    var trainingThreads = new OnDeviceFineTuningOptions().TrainingThreads;
    var trainingIdle = new OnDeviceFineTuningOptions
    {
        InferenceThreads = inferenceThreads,
        TrainingIdlePriority = trainingIdleFlag < 0 ? null : trainingIdleFlag != 0,
    }.UsesIdleTrainingPriority();
    var trainBatch = new OnDeviceFineTuningOptions().BatchSize;

    // Two versions to swap between: the base model after a few training steps, saved as version folders.
    var rng = new Random(WorkloadSpec.Seed);
    float[] Normal(int n) => Enumerable.Range(0, n).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()))).ToArray();
    var batch = new TrainingBatch()
        .Add("input", Normal(trainBatch * seq * WorkloadSpec.Hidden), trainBatch, seq, WorkloadSpec.Hidden)
        .Add("attention_mask", Enumerable.Repeat(1f, trainBatch * seq).ToArray(), trainBatch, seq)
        .WithLabels(Enumerable.Range(0, trainBatch).Select(_ => (long)rng.Next(WorkloadSpec.Classes)).ToArray(), trainBatch);
    using (var session = TrainingEngine.Open(artifacts, new TrainingEngineOptions { IntraOpThreads = trainingThreads, InterOpThreads = 1 }))
    {
        for (var v = 1; v <= 2; v++)
        {
            session.TrainStep(batch);
            session.OptimizerStep();
            var dir = Directory.CreateDirectory(Path.Combine(versions.Root, "v" + v.ToString("D6", CultureInfo.InvariantCulture)));
            session.ExportInferenceModel(Path.Combine(dir.FullName, ModelVersionStore.ModelFileName));
            // Only versions a gate promoted are kept (listed, rolled back to); these stand in for two such rounds.
            File.WriteAllText(Path.Combine(dir.FullName, ModelVersionStore.PromotedMarkerFileName), "");
        }
    }

    var request = new Dictionary<string, TensorData>
    {
        ["input"] = TensorData.Float(Normal(seq * WorkloadSpec.Hidden), 1, seq, WorkloadSpec.Hidden),
        ["attention_mask"] = TensorData.Float(Enumerable.Repeat(1f, seq).ToArray(), 1, seq),
    };

    Phase("idle", training: false, swaps: false);
    Phase("training", training: true, swaps: false);
    Phase("swaps", training: false, swaps: true);
    Phase("training+swaps", training: true, swaps: true);

    void Phase(string name, bool training, bool swaps)
    {
        using var stop = new CancellationTokenSource();
        long trainSteps = 0, swapCount = 0;
        using var ready = new ManualResetEventSlim(!training);
        var trainer = training ? Task.Factory.StartNew(() =>
        {
            BackgroundThreadPriority.Lower(trainingNiceness);
            if (trainingIdle && !BackgroundThreadPriority.Idle()) throw new InvalidOperationException("SCHED_IDLE was refused.");
            using var session = TrainingEngine.Open(artifacts, new TrainingEngineOptions { IntraOpThreads = trainingThreads, InterOpThreads = 1 });
            session.TrainStep(batch);
            session.OptimizerStep();
            ready.Set();
            while (!stop.IsCancellationRequested)
            {
                session.TrainStep(batch);
                session.OptimizerStep();
                Interlocked.Increment(ref trainSteps);
            }
        }, TaskCreationOptions.LongRunning) : Task.CompletedTask;
        var swapper = swaps ? Task.Run(async () =>
        {
            var next = 1;
            while (!stop.IsCancellationRequested)
            {
                await versions.RollbackAsync(next).ConfigureAwait(false);
                next = 3 - next;
                Interlocked.Increment(ref swapCount);
                try { await Task.Delay(swapMs, stop.Token).ConfigureAwait(false); } catch (OperationCanceledException) { }
            }
        }) : Task.CompletedTask;

        ready.Wait();
        for (var i = 0; i < 50; i++) handle.Predict(request);
        var latencies = new double[requests];
        var start = Stopwatch.GetTimestamp();
        for (var i = 0; i < requests; i++)
        {
            var t0 = Stopwatch.GetTimestamp();
            var output = handle.Predict(request);
            latencies[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            if (output.Outputs["logits"].FloatData!.Length != WorkloadSpec.Classes) throw new InvalidOperationException("unexpected logits");
            if (thinkMs > 0) Thread.Sleep(thinkMs);
        }
        var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        stop.Cancel();
        Task.WaitAll(trainer, swapper);
        Array.Sort(latencies);
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            Mode = "serving",
            Phase = name,
            Requests = requests,
            ThinkMs = thinkMs,
            Sequence = seq,
            InferenceThreads = inferenceThreads,
            TrainingNiceness = training ? trainingNiceness : 0,
            TrainingIdlePriority = training && trainingIdle,
            P50Ms = Math.Round(Percentile(latencies, 50), 3),
            P99Ms = Math.Round(Percentile(latencies, 99), 3),
            MaxMs = Math.Round(latencies[^1], 3),
            TrainingThreads = training ? trainingThreads : 0,
            TrainStepsPerSecond = Math.Round(trainSteps / seconds, 2),
            Swaps = swapCount,
            SwapEveryMs = swaps ? swapMs : 0,
            Loadavg = File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : null,
        }, json));
    }
}
finally
{
    try { Directory.Delete(root, recursive: true); } catch (IOException) { }
}
return 0;

int Int(string flag, int fallback) =>
    Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;

static double Percentile(double[] sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];
