using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Benchmarks;
using OnnxTune.Training;
using TrainingSession = OnnxTune.Training.TrainingSession;

// OnnxTune side of the training-step benchmark (issue 5): W1 head, W2 one BERT layer, W3 six layers.
// One step = TrainStep (forward + loss + backward) + OptimizerStep (AdamW); gradients are reset lazily.
var workloads = (Arg("--workloads") ?? "W1,W2,W3").Split(',', StringSplitOptions.RemoveEmptyEntries);
var stepsOverride = Arg("--steps") is { } s ? int.Parse(s, CultureInfo.InvariantCulture) : (int?)null;
var warmup = Arg("--warmup") is { } w ? int.Parse(w, CultureInfo.InvariantCulture) : 20;
var jsonOptions = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

foreach (var name in workloads)
{
    var (batch, seq, layers, steps) = name switch
    {
        "W1" => (32, 1, 0, 100),
        "W2" => (32, 64, 1, 100),
        "W3" => (16, 32, 6, 30),
        _ => throw new ArgumentException($"Unknown workload '{name}' (W1, W2, W3)."),
    };
    steps = stepsOverride ?? steps;
    var model = layers == 0 ? WorkloadModels.Head(1234) : WorkloadModels.Encoder(layers, 1234);
    var dir = Path.Combine(Path.GetTempPath(), "onnxtune-bench", name);
    var artifacts = ArtifactBuilder.Build(model, new ArtifactOptions
    {
        Selection = new ParameterSelection { Trainable = ["*.weight", "*.bias"] },
        Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
        Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 1e-3, Beta1 = 0.9, Beta2 = 0.999, Epsilon = 1e-8, WeightDecay = 0.01 },
    }, (p, o, opset) => OptimizerGraphBuilder.Build(p, o, opset));
    ArtifactBuilder.Save(artifacts, dir);

    using var session = TrainingSession.Open(dir, new TrainingSessionOptions { IntraOpThreads = 2, InterOpThreads = 1 });
    var rng = new Random(1234);
    var tokens = batch * seq;
    var input = Enumerable.Range(0, tokens * WorkloadModels.Hidden).Select(_ => (float)Normal(rng)).ToArray();
    var mask = Enumerable.Repeat(1f, tokens).ToArray();
    var labels = Enumerable.Range(0, batch).Select(_ => (long)rng.Next(WorkloadModels.Classes)).ToArray();
    var trainBatch = layers == 0
        ? new TrainingBatch().Add("input", input, batch, WorkloadModels.Hidden).WithLabels(labels, batch)
        : new TrainingBatch().Add("input", input, batch, seq, WorkloadModels.Hidden).Add("attention_mask", mask, batch, seq).WithLabels(labels, batch);

    float lossFirst = 0, lossLast = 0;
    for (var i = 0; i < warmup; i++)
    {
        var l = session.TrainStep(trainBatch);
        session.OptimizerStep();
        if (i == 0) lossFirst = l;
    }
    var total = new double[steps];
    var train = new double[steps];
    var optimizer = new double[steps];
    var allocBefore = GC.GetAllocatedBytesForCurrentThread();
    for (var i = 0; i < steps; i++)
    {
        var t0 = Stopwatch.GetTimestamp();
        lossLast = session.TrainStep(trainBatch);
        var t1 = Stopwatch.GetTimestamp();
        session.OptimizerStep();
        var t2 = Stopwatch.GetTimestamp();
        train[i] = Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds;
        optimizer[i] = Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds;
        total[i] = train[i] + optimizer[i];
    }
    var allocPerStep = (GC.GetAllocatedBytesForCurrentThread() - allocBefore) / steps;
    var flops = Flops(batch, seq, layers);
    var median = Median(total);
    Console.WriteLine(JsonSerializer.Serialize(new
    {
        System = "onnxtune",
        Workload = name,
        MedianMs = median,
        MinMs = total.Min(),
        MaxMs = total.Max(),
        Steps = steps,
        FlopsPerStep = flops,
        GflopPerS = flops / (median / 1000) / 1e9,
        AllocBytesPerStep = allocPerStep,
        PeakRssMb = Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0),
        Threads = 2,
        LossFirst = lossFirst,
        LossLast = lossLast,
        TrainGraphMedianMs = Median(train),
        OptimizerGraphMedianMs = Median(optimizer),
    }, jsonOptions));
}
return 0;

string? Arg(string flag) => Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

static double Median(double[] xs)
{
    var sorted = xs.Order().ToArray();
    return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
}

static double Normal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

// Analytic matmul FLOPs (3 × forward), the same convention as benchmarks/Workloads/WorkloadSpec.cs.
static long Flops(int batch, int seq, int layers)
{
    const long H = 384, I = 1536, C = 150;
    if (layers == 0) return 3L * 2 * batch * (H * 256 + 256 * C);
    long tokens = (long)batch * seq;
    var perLayer = 4L * 2 * tokens * H * H + 2L * 2 * tokens * H * I + 2L * 2 * batch * (long)seq * seq * H;
    return 3L * (layers * perLayer + 2L * batch * H * C);
}
