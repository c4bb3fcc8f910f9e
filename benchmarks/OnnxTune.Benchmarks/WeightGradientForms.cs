using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Benchmarks.Workloads;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Benchmarks;

/// <summary>
/// The weight-gradient product dW = Xᵀ·dY ([T, in]ᵀ × [T, out]) of W2/W3's shapes in the forms a gradient rule can
/// write, one-node-or-two graphs run interleaved (2 intra-op threads, no spinning): Gemm transA=1 (what MLAS runs by
/// transposing 12-row strips of A for every column block), an explicit Transpose then MatMul, and the same with ONNX
/// Runtime's graph optimisations off (so MatmulTransposeFusion cannot fold the Transpose back into a FusedMatMul).
/// </summary>
internal static class WeightGradientForms
{
    private static readonly string[] Forms = ["gemm-transA", "transpose-matmul", "transpose-matmul-unfused"];

    public static IEnumerable<object> Measure(IReadOnlyList<WorkloadSpec> specs, int rounds = 5, int runs = 20)
    {
        foreach (var spec in specs.Where(s => s.Kind != WorkloadKind.Head))
        {
            var t = spec.Batch * spec.SequenceLength;
            foreach (var (a, b) in new[] { (WorkloadSpec.Hidden, WorkloadSpec.Hidden), (WorkloadSpec.Hidden, WorkloadSpec.Intermediate), (WorkloadSpec.Intermediate, WorkloadSpec.Hidden) })
            {
                var runners = Forms.Select(f => new Runner(f, t, a, b)).ToArray();
                try
                {
                    var medians = Forms.ToDictionary(f => f, _ => new List<double>());
                    for (var r = 0; r < rounds; r++)
                        foreach (var runner in runners) medians[runner.Form].Add(runner.Median(runs));
                    var baseline = Stats.Median(medians[Forms[0]]);
                    yield return new
                    {
                        Mode = "weight-grad-forms",
                        Workload = spec.Name,
                        Shape = $"[{t},{a}]T x [{t},{b}]",
                        Rounds = rounds,
                        MedianMs = medians.ToDictionary(kv => kv.Key, kv => Math.Round(Stats.Median(kv.Value), 3)),
                        RatioToGemmTransA = medians.ToDictionary(kv => kv.Key, kv => Math.Round(Stats.Median(kv.Value) / baseline, 3)),
                    };
                }
                finally
                {
                    foreach (var runner in runners) runner.Dispose();
                }
            }
        }
    }

    private sealed class Runner : IDisposable
    {
        private readonly InferenceSession _session;
        private readonly OrtValue _x, _dy, _dw;
        private readonly OrtIoBinding _binding;
        private readonly RunOptions _ro = new();

        public Runner(string form, int t, int a, int b)
        {
            Form = form;
            var model = new ModelProto { IrVersion = 8, ProducerName = "OnnxTune.Benchmarks", Graph = new GraphProto { Name = form } };
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
            var e = new GraphEditor(model.Graph);
            e.Reserve("x"); e.Reserve("dy"); e.Reserve("dw"); e.Reserve("xt");
            e.AddInput(ValueInfos.Tensor("x", DataType.Float, (long)t, (long)a));
            e.AddInput(ValueInfos.Tensor("dy", DataType.Float, (long)t, (long)b));
            if (form == "gemm-transA")
                e.AddNode("Gemm", ["x", "dy"], ["dw"], Attr.Int("transA", 1));
            else
            {
                e.AddNode("Transpose", ["x"], ["xt"], Attr.Ints("perm", 1, 0));
                e.AddNode("MatMul", ["xt", "dy"], ["dw"]);
            }
            model.Graph.Output.Add(ValueInfos.Tensor("dw", DataType.Float, (long)a, (long)b));
            using var so = new SessionOptions { IntraOpNumThreads = WorkloadSpec.IntraOpThreads, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
            if (form == "transpose-matmul-unfused") so.GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL;
            so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
            _session = new InferenceSession(OnnxModelWriter.ToBytes(model), so);
            var rng = new Random(WorkloadSpec.Seed);
            float[] Fill(int len) { var v = new float[len]; for (var i = 0; i < len; i++) v[i] = (float)(rng.NextDouble() - 0.5); return v; }
            _x = OrtValue.CreateTensorValueFromMemory(Fill(t * a), [t, a]);
            _dy = OrtValue.CreateTensorValueFromMemory(Fill(t * b), [t, b]);
            _dw = OrtValue.CreateTensorValueFromMemory(new float[a * b], [a, b]);
            _binding = _session.CreateIoBinding();
            _binding.BindInput("x", _x);
            _binding.BindInput("dy", _dy);
            _binding.BindOutput("dw", _dw);
            for (var i = 0; i < 3; i++) _session.RunWithBinding(_ro, _binding);
        }

        public string Form { get; }

        public double Median(int runs)
        {
            var times = new double[runs];
            for (var i = 0; i < runs; i++)
            {
                var start = Stopwatch.GetTimestamp();
                _session.RunWithBinding(_ro, _binding);
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            return Stats.Median(times);
        }

        public void Dispose()
        {
            _binding.Dispose(); _ro.Dispose(); _x.Dispose(); _dy.Dispose(); _dw.Dispose(); _session.Dispose();
        }
    }
}
