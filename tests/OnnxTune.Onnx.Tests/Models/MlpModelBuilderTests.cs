using global::Onnx;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Models;
using OnnxTune.Onnx.Tensors;
using DataType = global::Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Onnx.Tests.Models;

public sealed class MlpModelBuilderTests
{
    private static ModelProto Build(int seed = 0, string activation = "Relu") =>
        new MlpModelBuilder(4) { Activation = activation }.Layer(8).Layer(5).Layer(3).Build(seed);

    private static float[] Init(ModelProto m, string name) =>
        TensorProtos.ToFloatArray(m.Graph.Initializer.Single(t => t.Name == name));

    [Fact]
    public void Gemm_weights_are_out_by_in_with_transB_and_biases_are_out()
    {
        var m = Build();
        var sizes = new[] { 4, 8, 5, 3 };

        Assert.Equal(6, m.Graph.Initializer.Count);
        for (var l = 1; l < sizes.Length; l++)
        {
            var w = m.Graph.Initializer.Single(t => t.Name == $"fc{l}.weight");
            var b = m.Graph.Initializer.Single(t => t.Name == $"fc{l}.bias");
            Assert.Equal([(long)sizes[l], sizes[l - 1]], w.Dims);
            Assert.Equal([(long)sizes[l]], b.Dims);
            Assert.Equal((int)DataType.Float, w.DataType);
            var gemm = m.Graph.Node.Single(n => n.OpType == "Gemm" && n.Input[1] == w.Name);
            Assert.Equal(1L, gemm.GetInt("transB", 0));
            Assert.Equal(0L, gemm.GetInt("transA", 0));
            Assert.Equal(b.Name, gemm.Input[2]);
        }
    }

    [Fact]
    public void Graph_structure_is_gemm_activation_chain_with_symbolic_batch()
    {
        var m = Build(activation: "Tanh");

        Assert.Equal(["Gemm", "Tanh", "Gemm", "Tanh", "Gemm"], m.Graph.Node.Select(n => n.OpType));
        Assert.Equal("features", m.Graph.Node[0].Input[0]);
        Assert.Equal("logits", m.Graph.Node[^1].Output[0]);
        for (var i = 1; i < m.Graph.Node.Count; i++)
            Assert.Equal(m.Graph.Node[i - 1].Output[0], m.Graph.Node[i].Input[0]);
        Assert.Equal("features", m.Graph.Input.Single().Name);
        Assert.Equal([null, 4L], ValueInfos.Dims(m.Graph.Input[0]));
        Assert.Equal("batch", m.Graph.Input[0].Type.TensorType.Shape.Dim[0].DimParam);
        Assert.Equal("logits", m.Graph.Output.Single().Name);
        Assert.Equal([null, 3L], ValueInfos.Dims(m.Graph.Output[0]));
        Assert.Equal(DataType.Float, ValueInfos.ElemType(m.Graph.Output[0]));
        Assert.Equal([("", 17L)], m.OpsetImport.Select(o => (o.Domain, o.Version)));
        Assert.Equal(m.Graph.Node.Count, m.Graph.Node.Select(n => n.Name).Distinct().Count());
    }

    [Fact]
    public void Custom_names_and_opset_are_used()
    {
        var m = new MlpModelBuilder(2) { InputName = "x", OutputName = "y", Opset = 13 }.Layer(1).Build();

        Assert.Equal("x", m.Graph.Input[0].Name);
        Assert.Equal("y", m.Graph.Output[0].Name);
        Assert.Equal(["Gemm"], m.Graph.Node.Select(n => n.OpType));
        Assert.Equal(["x", "fc1.weight", "fc1.bias"], m.Graph.Node[0].Input);
        Assert.Equal(["y"], m.Graph.Node[0].Output);
        Assert.Equal(13L, m.OpsetImport.Single().Version);
    }

    [Fact]
    public void Init_is_uniform_within_one_over_sqrt_fan_in_like_nn_Linear()
    {
        // Wide enough that the extreme values must come close to the bound.
        var m = new MlpModelBuilder(64).Layer(256).Layer(16).Build(seed: 3);

        foreach (var (l, fanIn) in new[] { (1, 64), (2, 256) })
        {
            var bound = 1.0 / Math.Sqrt(fanIn);
            foreach (var name in new[] { $"fc{l}.weight", $"fc{l}.bias" })
            {
                var v = Init(m, name);
                Assert.All(v, x => Assert.InRange(x, -bound, bound));
                Assert.True(v.Distinct().Count() > v.Length / 2, $"{name} values are not spread out");
            }
            var w = Init(m, $"fc{l}.weight");
            Assert.True(w.Max() > 0.9 * bound && w.Min() < -0.9 * bound, $"fc{l}.weight does not fill ±{bound}");
            Assert.InRange(w.Average(), -0.1 * bound, 0.1 * bound);
            // U(-b, b) has variance b²/3.
            var variance = w.Select(x => (double)x * x).Average();
            Assert.InRange(variance, 0.85 * bound * bound / 3, 1.15 * bound * bound / 3);
        }
    }

    [Fact]
    public void Same_seed_gives_identical_weights_and_different_seeds_differ()
    {
        var a = Build(seed: 7);
        var b = Build(seed: 7);
        var c = Build(seed: 8);

        Assert.Equal(OnnxModelWriter.ToBytes(a), OnnxModelWriter.ToBytes(b));
        foreach (var name in new[] { "fc1.weight", "fc1.bias", "fc3.weight" })
            Assert.NotEqual(Init(a, name), Init(c, name));
    }

    [Fact]
    public void Builder_rejects_invalid_sizes_and_empty_models()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MlpModelBuilder(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MlpModelBuilder(3).Layer(0));
        Assert.Throws<InvalidOperationException>(() => new MlpModelBuilder(3).Build());
    }

    [Fact]
    public void Output_name_clashing_with_the_input_name_throws_OnnxTuneException()
    {
        var e = Assert.Throws<OnnxTuneException>(() => new MlpModelBuilder(2) { InputName = "x", OutputName = "x" }.Layer(1).Build());
        Assert.Contains("'x'", e.Message);
    }

    [Theory]
    [InlineData("Relu")]
    [InlineData("Tanh")]
    [InlineData("Sigmoid")]
    public void Built_model_runs_in_onnx_runtime_and_matches_a_reference_forward(string activation)
    {
        var m = Build(seed: 11, activation: activation);
        const int batch = 3;
        var x = new float[batch * 4];
        for (var i = 0; i < x.Length; i++) x[i] = (i - 5) * 0.37f;

        using var session = new InferenceSession(OnnxModelWriter.ToBytes(m));
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("features", new DenseTensor<float>(x, [batch, 4]))]);
        var output = results.Single(r => r.Name == "logits").AsTensor<float>();

        Assert.Equal([batch, 3], output.Dimensions.ToArray());
        var expected = Reference(m, x, batch, [4, 8, 5, 3], activation);
        var actual = output.ToArray();
        for (var i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], actual[i], 1e-4);
    }

    private static double[] Reference(ModelProto m, float[] input, int batch, int[] sizes, string activation)
    {
        var h = input.Select(v => (double)v).ToArray();
        for (var l = 1; l < sizes.Length; l++)
        {
            int fin = sizes[l - 1], fout = sizes[l];
            var w = Init(m, $"fc{l}.weight");
            var b = Init(m, $"fc{l}.bias");
            var next = new double[batch * fout];
            for (var n = 0; n < batch; n++)
                for (var o = 0; o < fout; o++)
                {
                    double s = b[o];
                    for (var i = 0; i < fin; i++) s += h[n * fin + i] * w[o * fin + i];
                    if (l < sizes.Length - 1)
                        s = activation switch
                        {
                            "Relu" => Math.Max(0, s),
                            "Tanh" => Math.Tanh(s),
                            "Sigmoid" => 1 / (1 + Math.Exp(-s)),
                            _ => throw new ArgumentOutOfRangeException(nameof(activation)),
                        };
                    next[n * fout + o] = s;
                }
            h = next;
        }
        return h;
    }
}
