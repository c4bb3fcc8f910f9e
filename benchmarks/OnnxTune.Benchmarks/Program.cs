using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Benchmarks;
using OnnxTune.Benchmarks.Workloads;
using OnnxTune.Training;

// OnnxTune side of the training-step benchmark (issue 5). Modes:
//   (default)          train W1–W3 and print one JSON line per workload (same keys as the peers + a step breakdown)
//   --sgemm            the SGEMM ceiling through ONNX Runtime: one MatMul per main shape of each workload
//   --memory-rounds N  N consecutive small fine-tuning rounds; RSS every 100 rounds
//   --weight-grad-forms  dW = Xᵀ·dY of W2/W3's shapes as Gemm transA=1 vs Transpose + MatMul, interleaved
// Usage: [--workloads W1,W2,W3] [--steps N] [--warmup N] [--init DIR] [--variant NAME] [--sgemm] [--memory-rounds N]
//        [--profile PREFIX]  (ONNX Runtime profiling of all three sessions; summarise with profile.py)
//        [--graph operators|decomposed]  (W2/W3: LayerNorm and GELU as ONNX operators (default) or element-wise ops)
try
{
    var options = BenchArgs.Parse(args);
    if (options.Sgemm)
    {
        foreach (var spec in options.Workloads) Print(SgemmCeiling.Measure(spec));
        return 0;
    }
    if (options.WeightGradForms)
    {
        foreach (var line in WeightGradientForms.Measure(options.Workloads)) Print(line);
        return 0;
    }
    if (options.MemoryRounds is { } rounds)
    {
        MemoryRounds.Run(rounds, Print);
        return 0;
    }
    foreach (var spec in options.Workloads)
        Print(TrainBenchmark.Run(spec, options));
    return 0;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine("usage: OnnxTune.Benchmarks [--workloads W1,W2,W3] [--steps N] [--warmup N] [--init DIR] [--variant "
        + string.Join("|", SessionVariants.Names) + "] [--sgemm] [--weight-grad-forms] [--memory-rounds N] [--profile PREFIX] [--graph operators|decomposed]");
    return 2;
}

static void Print(object result) => Console.WriteLine(JsonSerializer.Serialize(result, BenchJson.Options));

namespace OnnxTune.Benchmarks
{
    internal sealed record BenchArgs(IReadOnlyList<WorkloadSpec> Workloads, int? Steps, int? Warmup, string? InitDirectory,
        string Variant, bool Sgemm, int? MemoryRounds, string? ProfilePrefix, GraphForm Form = GraphForm.Operators, bool WeightGradForms = false)
    {
        public static BenchArgs Parse(string[] args)
        {
            IReadOnlyList<WorkloadSpec> workloads = WorkloadSpec.All;
            int? steps = null, warmup = null, rounds = null;
            string? init = null, profile = null;
            var variant = "default";
            var sgemm = false;
            var weightGradForms = false;
            var form = GraphForm.Operators;
            for (var i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} expects a value");
                int Positive(string flag, int min) =>
                    int.TryParse(Next(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v >= min ? v : throw new ArgumentException($"{flag} expects an integer >= {min}");
                switch (args[i])
                {
                    case "--workloads":
                        var names = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                        workloads = names.Select(n => WorkloadSpec.Find(n) ?? throw new ArgumentException($"unknown workload '{n}' (W1, W2, W3)")).ToArray();
                        break;
                    case "--steps": steps = Positive("--steps", 1); break;
                    case "--warmup": warmup = Positive("--warmup", 0); break;
                    case "--memory-rounds": rounds = Positive("--memory-rounds", 1); break;
                    case "--init": init = Next(); break;
                    case "--profile": profile = Next(); break;
                    case "--sgemm": sgemm = true; break;
                    case "--weight-grad-forms": weightGradForms = true; break;
                    case "--graph":
                        form = Next() switch
                        {
                            "operators" => GraphForm.Operators,
                            "decomposed" => GraphForm.Decomposed,
                            var other => throw new ArgumentException($"--graph expects 'operators' or 'decomposed', not '{other}'"),
                        };
                        break;
                    case "--variant":
                        variant = Next();
                        if (!SessionVariants.Names.Contains(variant)) throw new ArgumentException($"unknown variant '{variant}'");
                        break;
                    default: throw new ArgumentException($"unknown argument '{args[i]}'");
                }
            }
            return new BenchArgs(workloads, steps, warmup, init, variant, sgemm, rounds, profile, form, weightGradForms);
        }
    }

    /// <summary>ONNX Runtime session-option variants tried against OnnxTune's defaults (step 3 of issue 5).</summary>
    internal static class SessionVariants
    {
        public static readonly string[] Names = ["default", "spin", "spin-stop", "parallel", "spin-parallel", "extended", "basic", "no-mem-pattern", "no-arena", "no-arena-no-mem-pattern", "weight-grad-gemm"];

        /// <summary>
        /// Applies the variant's session options; "spin-parallel" is what TrainingEngine did before issue 5 with
        /// InterOpThreads = 1. Graph variants ("weight-grad-gemm": weight gradients as Gemm transA=1, the form before
        /// issue 14) rewrite the artifacts instead (<see cref="GraphVariants"/>).
        /// </summary>
        public static void Apply(string name, TrainingEngineOptions options)
        {
            options.Spinning = name switch
            {
                "spin" or "spin-parallel" => ThreadSpinning.Always,
                "spin-stop" => ThreadSpinning.DuringRuns,
                _ => ThreadSpinning.Never,
            };
            options.ConfigureSessionOptions = name switch
            {
                "default" or "spin" or "spin-stop" or "weight-grad-gemm" => null,
                "parallel" or "spin-parallel" => so => so.ExecutionMode = ExecutionMode.ORT_PARALLEL,
                "extended" => so => so.GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "basic" => so => so.GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "no-mem-pattern" => so => so.EnableMemoryPattern = false,
                "mem-pattern" => so => so.EnableMemoryPattern = true,
                "no-arena" => so => so.EnableCpuMemArena = false,
                "no-arena-no-mem-pattern" => so => { so.EnableCpuMemArena = false; so.EnableMemoryPattern = false; },
                _ => throw new ArgumentException($"unknown variant '{name}'"),
            };
        }
    }

    internal static class BenchJson
    {
        public static readonly JsonSerializerOptions Options = new()
        {
            PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
            NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        };
    }

    internal static class Stats
    {
        public static double Median(IEnumerable<double> xs)
        {
            var s = xs.Order().ToArray();
            return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
        }

        public static double Percentile(double[] sorted, double p) =>
            sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];
    }

    internal static class ProcessMemory
    {
        /// <summary>Resets the kernel's peak-RSS mark (VmHWM); Linux only, ignored elsewhere.</summary>
        public static void ResetPeak()
        {
            try { File.WriteAllText("/proc/self/clear_refs", "5"); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }

        public static double PeakRssMb() => Status("VmHWM:") ?? Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;

        public static double RssMb() => Status("VmRSS:") ?? Process.GetCurrentProcess().WorkingSet64 / 1048576.0;

        private static double? Status(string key)
        {
            if (!File.Exists("/proc/self/status")) return null;
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(key, StringComparison.Ordinal))
                    return long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
            return null;
        }
    }
}
