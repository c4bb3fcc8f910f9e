using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Benchmarks.Workloads;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Benchmarks;

/// <summary>
/// The SGEMM ceiling through ONNX Runtime itself: a graph holding one MatMul of each of a workload's main forward
/// shapes, run with 2 intra-op threads (no spinning, like TrainingEngine). The workload ceiling is the count-weighted
/// mix Σ FLOPs / Σ time over the products one forward pass runs (the backward pass runs the same sizes transposed),
/// from each shape's best time: on a shared machine the median measures the neighbours, the best the hardware.
/// </summary>
internal static class SgemmCeiling
{
    public static object Measure(WorkloadSpec spec)
    {
        const int H = WorkloadSpec.Hidden, I = WorkloadSpec.Intermediate;
        var t = spec.Batch * spec.SequenceLength;
        (int M, int K, int N, int Count)[] shapes = spec.Kind == WorkloadKind.Head
            ? [(spec.Batch, H, WorkloadSpec.HeadHidden, 1), (spec.Batch, WorkloadSpec.HeadHidden, WorkloadSpec.Classes, 1)]
            : [(t, H, H, 4 * spec.Layers), (t, H, I, spec.Layers), (t, I, H, spec.Layers)];
        var results = new List<object>();
        double flops = 0, seconds = 0;
        foreach (var (m, k, n, count) in shapes)
        {
            var (median, ms) = TimeMatMul(m, k, n, spec.Kind == WorkloadKind.Head ? 2000 : 50);
            var f = 2.0 * m * k * n;
            results.Add(new
            {
                Shape = $"[{m},{k}]x[{k},{n}]",
                Count = count,
                BestMs = Math.Round(ms, 4),
                MedianMs = Math.Round(median, 4),
                GflopPerS = Math.Round(f / (ms * 1e6), 2),
                MedianGflopPerS = Math.Round(f / (median * 1e6), 2),
            });
            flops += count * f;
            seconds += count * ms / 1000;
        }
        return new
        {
            System = "ORT-SGEMM",
            Workload = spec.Name,
            Threads = WorkloadSpec.IntraOpThreads,
            CeilingGflopPerS = Math.Round(flops / seconds / 1e9, 2),
            Shapes = results,
        };
    }

    private static (double Median, double Best) TimeMatMul(int m, int k, int n, int runs)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "OnnxTune.Benchmarks", Graph = new GraphProto { Name = "sgemm" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var e = new GraphEditor(model.Graph);
        e.Reserve("a"); e.Reserve("b"); e.Reserve("c");
        e.AddInput(ValueInfos.Tensor("a", DataType.Float, (long)m, (long)k));
        e.AddInput(ValueInfos.Tensor("b", DataType.Float, (long)k, (long)n));
        e.AddNode("MatMul", ["a", "b"], ["c"]);
        model.Graph.Output.Add(ValueInfos.Tensor("c", DataType.Float, (long)m, (long)n));

        using var so = new SessionOptions { IntraOpNumThreads = WorkloadSpec.IntraOpThreads, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model), so);
        var rng = new Random(WorkloadSpec.Seed);
        float[] Fill(int len) { var x = new float[len]; for (var i = 0; i < len; i++) x[i] = (float)(rng.NextDouble() - 0.5); return x; }
        using var a = OrtValue.CreateTensorValueFromMemory(Fill(m * k), [m, k]);
        using var b = OrtValue.CreateTensorValueFromMemory(Fill(k * n), [k, n]);
        using var c = OrtValue.CreateTensorValueFromMemory(new float[m * n], [m, n]);
        using var binding = session.CreateIoBinding();
        binding.BindInput("a", a);
        binding.BindInput("b", b);
        binding.BindOutput("c", c);
        using var ro = new RunOptions();
        for (var i = 0; i < Math.Max(5, runs / 10); i++) session.RunWithBinding(ro, binding);
        var times = new double[runs];
        for (var i = 0; i < runs; i++)
        {
            var start = Stopwatch.GetTimestamp();
            session.RunWithBinding(ro, binding);
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        return (Stats.Median(times), times.Min());
    }
}
