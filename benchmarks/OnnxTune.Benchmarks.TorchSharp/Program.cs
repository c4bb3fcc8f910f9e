using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using OnnxTune.Benchmarks.TorchSharp;
using OnnxTune.Benchmarks.Workloads;
using TorchSharp;
using static TorchSharp.torch;

// TorchSharp peer for issue 5: trains W1–W3 (benchmarks/Workloads/WorkloadSpec.cs) and prints one JSON line each.
// Usage: [--workloads W1,W2,W3] [--steps N] [--warmup N] [--dump-init DIR]
//        --w4 --work DIR   W4 of issue 14 instead (EncoderW4.cs)
if (args.Length == 3 && args[0] == "--w4" && args[1] == "--work")
{
    return EncoderW4.Run(args[2]);
}

var options = BenchOptions.Parse(args);
if (options is null)
{
    return 2;
}

torch.set_num_interop_threads(WorkloadSpec.InterOpThreads);
torch.set_num_threads(WorkloadSpec.IntraOpThreads);

foreach (var spec in options.Workloads)
{
    using var run = WorkloadRun.Create(spec);
    if (options.DumpInitDirectory is { } dir)
    {
        var file = Path.Combine(dir, $"{spec.Name}.safetensors");
        SafeTensorsDump.Write(file, run.NamedTensors(), new Dictionary<string, string>
        {
            ["workload"] = spec.Name,
            ["seed"] = WorkloadSpec.Seed.ToString(CultureInfo.InvariantCulture),
            ["source"] = $"TorchSharp {typeof(torch).Assembly.GetName().Version}",
        });
        Console.Error.WriteLine($"{spec.Name}: initial weights and inputs written to {file}");
        continue;
    }

    var result = run.Measure(options.WarmupSteps ?? WorkloadSpec.WarmupSteps, options.TimedSteps ?? spec.TimedSteps);
    Console.WriteLine(JsonSerializer.Serialize(result, ResultJson.Options));
}

return 0;

internal sealed record BenchOptions(IReadOnlyList<WorkloadSpec> Workloads, int? TimedSteps, int? WarmupSteps, string? DumpInitDirectory)
{
    public static BenchOptions? Parse(string[] args)
    {
        IReadOnlyList<WorkloadSpec> workloads = WorkloadSpec.All;
        int? steps = null, warmup = null;
        string? dump = null;
        for (int i = 0; i < args.Length; i++)
        {
            string? Next() => i + 1 < args.Length ? args[++i] : null;
            switch (args[i])
            {
                case "--workloads":
                    var names = (Next() ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    var found = names.Select(WorkloadSpec.Find).ToList();
                    if (names.Length == 0 || found.Any(w => w is null))
                    {
                        return Fail($"--workloads expects a comma-separated subset of {string.Join(",", WorkloadSpec.All.Select(w => w.Name))}");
                    }

                    workloads = found!;
                    break;
                case "--steps":
                    if (!int.TryParse(Next(), out var s) || s < 1) return Fail("--steps expects a positive integer");
                    steps = s;
                    break;
                case "--warmup":
                    if (!int.TryParse(Next(), out var w) || w < 0) return Fail("--warmup expects a non-negative integer");
                    warmup = w;
                    break;
                case "--dump-init":
                    dump = Next();
                    if (string.IsNullOrEmpty(dump)) return Fail("--dump-init expects a directory");
                    break;
                default:
                    return Fail($"unknown argument '{args[i]}'");
            }
        }

        return new BenchOptions(workloads, steps, warmup, dump);
    }

    private static BenchOptions? Fail(string message)
    {
        Console.Error.WriteLine($"error: {message}");
        Console.Error.WriteLine("usage: OnnxTune.Benchmarks.TorchSharp [--workloads W1,W2,W3] [--steps N] [--warmup N] [--dump-init DIR]");
        return null;
    }
}

/// <summary>One workload's model, optimizer and fixed batch, built from the shared seed.</summary>
internal sealed class WorkloadRun : IDisposable
{
    private readonly WorkloadSpec spec;
    private readonly nn.Module model;
    private readonly Func<Tensor> forward;
    private readonly Tensor input;
    private readonly Tensor? attentionMask;
    private readonly Tensor labels;
    private readonly optim.Optimizer optimizer;

    private WorkloadRun(WorkloadSpec spec, nn.Module model, Func<Tensor> forward, Tensor input, Tensor? attentionMask, Tensor labels)
    {
        this.spec = spec;
        this.model = model;
        this.forward = forward;
        this.input = input;
        this.attentionMask = attentionMask;
        this.labels = labels;
        long count = model.parameters().Sum(p => p.numel());
        if (count != spec.ParameterCount)
        {
            throw new InvalidOperationException($"{spec.Name}: model has {count} parameters, WorkloadSpec says {spec.ParameterCount}");
        }

        optimizer = optim.AdamW(model.parameters(), WorkloadSpec.LearningRate, WorkloadSpec.Beta1, WorkloadSpec.Beta2,
            WorkloadSpec.Eps, WorkloadSpec.WeightDecay);
    }

    public static WorkloadRun Create(WorkloadSpec spec)
    {
        // Order matters for reproducibility: seed, parameters (module construction order), input, labels.
        torch.random.manual_seed(WorkloadSpec.Seed);
        if (spec.Kind == WorkloadKind.Head)
        {
            var head = new HeadModel();
            var x = randn(spec.Batch, WorkloadSpec.Hidden);
            var y = randint(0, WorkloadSpec.Classes, [spec.Batch], dtype: ScalarType.Int64);
            head.train();
            return new WorkloadRun(spec, head, () => head.forward(x), x, null, y);
        }

        var encoder = new EncoderClassifier(spec.Layers);
        var hidden = randn(spec.Batch, spec.SequenceLength, WorkloadSpec.Hidden);
        var mask = ones(spec.Batch, spec.SequenceLength);
        var labels = randint(0, WorkloadSpec.Classes, [spec.Batch], dtype: ScalarType.Int64);
        encoder.train();
        return new WorkloadRun(spec, encoder, () => encoder.forward(hidden, mask), hidden, mask, labels);
    }

    public IEnumerable<(string Name, Tensor Tensor)> NamedTensors()
    {
        foreach (var (name, parameter) in model.named_parameters())
        {
            yield return (name, parameter);
        }

        yield return ("input", input);
        if (attentionMask is not null)
        {
            yield return ("attention_mask", attentionMask);
        }

        yield return ("labels", labels);
    }

    private float Step(bool readLoss)
    {
        model.zero_grad(set_to_none: true);
        using var scope = NewDisposeScope();
        var loss = nn.functional.cross_entropy(forward(), labels);
        loss.backward();
        optimizer.step();
        return readLoss ? loss.item<float>() : float.NaN;
    }

    public BenchResult Measure(int warmupSteps, int timedSteps)
    {
        ProcessMemory.ResetPeak();
        float firstLoss = float.NaN, lastLoss = float.NaN;
        for (int i = 0; i < warmupSteps; i++)
        {
            var l = Step(readLoss: i == 0);
            if (i == 0) firstLoss = l;
        }

        var times = new double[timedSteps];
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < timedSteps; i++)
        {
            long start = Stopwatch.GetTimestamp();
            Step(readLoss: false);
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        lastLoss = EvaluateLoss();
        Array.Sort(times);
        double median = timedSteps % 2 == 1 ? times[timedSteps / 2] : (times[timedSteps / 2 - 1] + times[timedSteps / 2]) / 2;
        return new BenchResult(
            System: "TorchSharp",
            Version: $"TorchSharp {typeof(torch).Assembly.GetName().Version?.ToString(3)}, libtorch {torch.__version__}",
            Workload: spec.Name,
            MedianMs: Math.Round(median, 3),
            MinMs: Math.Round(times[0], 3),
            MaxMs: Math.Round(times[^1], 3),
            Steps: timedSteps,
            WarmupSteps: warmupSteps,
            FlopsPerStep: spec.FlopsPerStep,
            GflopPerS: Math.Round(spec.FlopsPerStep / (median * 1e6), 2),
            AllocBytesPerStep: allocated / timedSteps,
            PeakRssMb: Math.Round(ProcessMemory.PeakRssMb(), 1),
            Threads: torch.get_num_threads(),
            LossFirst: firstLoss,
            LossLast: lastLoss);
    }

    private float EvaluateLoss()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        return nn.functional.cross_entropy(forward(), labels).item<float>();
    }

    public void Dispose()
    {
        optimizer.Dispose();
        model.Dispose();
        input.Dispose();
        attentionMask?.Dispose();
        labels.Dispose();
    }
}

internal sealed record BenchResult(
    string System,
    string Version,
    string Workload,
    double MedianMs,
    double MinMs,
    double MaxMs,
    int Steps,
    int WarmupSteps,
    long FlopsPerStep,
    double GflopPerS,
    long AllocBytesPerStep,
    double PeakRssMb,
    int Threads,
    float LossFirst,
    float LossLast);

internal static class ResultJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}

internal static class ProcessMemory
{
    /// <summary>Resets the kernel's peak-RSS mark (VmHWM) so each workload reports its own peak; Linux only.</summary>
    public static void ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not Linux or not permitted: the peak then covers the whole process so far.
        }
    }

    public static double PeakRssMb()
    {
        if (File.Exists("/proc/self/status"))
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                {
                    var kb = long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
                    return kb / 1024.0;
                }
            }
        }

        return Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0);
    }
}
