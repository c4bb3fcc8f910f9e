using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Models;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Partitioning;

public sealed class FrozenPrefixSplitterTests
{
    [Fact]
    public void Mlp_with_frozen_first_layer_splits_at_the_first_activation()
    {
        var model = new MlpModelBuilder(4).Layer(6).Layer(3).Build(seed: 3);
        var split = FrozenPrefixSplitter.Split(model, ["fc2.weight", "fc2.bias"]);

        var frontier = Assert.Single(split.Manifest.Frontier);
        Assert.Equal("act1_out", frontier.Name);
        Assert.Equal("float", frontier.ElementType);
        Assert.Equal(["batch", "6"], frontier.Shape);
        Assert.Empty(split.Manifest.PassthroughInputs);
        Assert.Equal(["fc1.weight", "fc1.bias"], split.Prefix.Graph.Initializer.Select(t => t.Name));
        Assert.Equal(["fc2.weight", "fc2.bias"], split.Suffix.Graph.Initializer.Select(t => t.Name));
        Assert.Equal(["Gemm", "Relu"], split.Prefix.Graph.Node.Select(n => n.OpType));
        Assert.Equal(["Gemm"], split.Suffix.Graph.Node.Select(n => n.OpType));

        var x = Random(5 * 4, seed: 1);
        var full = Run(model, ("features", x, [5, 4]))["logits"];
        var act = Run(split.Prefix, ("features", x, [5, 4]))["act1_out"];
        var composed = Run(split.Suffix, ("act1_out", act, [5, 6]))["logits"];
        AssertClose(full, composed, 1e-6f);
    }

    [Fact]
    public void Attention_like_model_caches_hidden_state_and_mask_and_recomputes_shape_arithmetic()
    {
        var (model, trainable) = AttentionModel();
        var split = FrozenPrefixSplitter.Split(model, trainable);

        Assert.Equal(["hidden", "mask_bias"], split.Manifest.Frontier.Select(f => f.Name).Order(StringComparer.Ordinal));
        Assert.All(split.Manifest.Frontier, f => Assert.Equal("float", f.ElementType));
        Assert.Equal("batch", split.Manifest.Frontier.Single(f => f.Name == "hidden").Shape[0]);
        // Shape(hidden) → Gather → Concat is recomputed in the suffix, reading the cached hidden state.
        Assert.Contains(split.Suffix.Graph.Node, n => n.OpType == "Shape" && n.Input[0] == "hidden");
        Assert.DoesNotContain(split.Prefix.Graph.Node, n => n.OpType == "Shape");
        Assert.True(split.Manifest.RecomputedNodeCount >= 4, $"recomputed {split.Manifest.RecomputedNodeCount}");
        Assert.DoesNotContain(split.Prefix.Graph.Initializer, t => trainable.Contains(t.Name));
        Assert.Equal(trainable.Order(StringComparer.Ordinal), split.Suffix.Graph.Initializer.Select(t => t.Name).Where(trainable.Contains).Order(StringComparer.Ordinal));

        foreach (var (batch, seq) in new[] { (3, 5), (2, 7) })
        {
            var x = Random(batch * seq * 8, seed: batch);
            var mask = Enumerable.Range(0, batch * seq).Select(i => i % seq < seq - i / seq ? 1L : 0L).ToArray();
            var full = Run(model, ("x", x, [batch, seq, 8]), ("mask", mask, [batch, seq]))["y"];
            var prefix = Run(split.Prefix, ("x", x, [batch, seq, 8]), ("mask", mask, [batch, seq]));
            var suffix = Run(split.Suffix,
                ("hidden", prefix["hidden"], [batch, seq, 8]),
                ("mask_bias", prefix["mask_bias"], [batch, 1, seq]))["y"];
            AssertClose(full, suffix, 1e-5f);
        }
    }

    [Fact]
    public void Data_input_read_by_the_trainable_part_is_a_passthrough_input()
    {
        // y = Gemm(Relu(Gemm(x, W1)), W2) + x * s, with W2 and s trainable: the suffix reads x directly.
        var f = new ModelFactory(seed: 2);
        var x = f.Input("x", DataType.Float, "batch", 3L);
        var w1 = f.Param("w1", [3, 3]);
        var w2 = f.Param("w2", [3, 3]);
        var s = f.Param("s", [3]);
        var h = f.Node("Relu", [f.Node("MatMul", [x, w1])]);
        var y = f.Editor.Add("Add", [f.Node("MatMul", [h, w2]), f.Node("Mul", [x, s])], "y");
        var model = f.Output(y, "batch", 3L);

        var split = FrozenPrefixSplitter.Split(model, ["w2", "s"]);
        Assert.Equal("x", Assert.Single(split.Manifest.PassthroughInputs).Name);
        Assert.Equal(h, Assert.Single(split.Manifest.Frontier).Name);
        Assert.Equal(["x", h], split.Suffix.Graph.Input.Select(i => i.Name));

        var data = Random(4 * 3, seed: 9);
        var full = Run(model, ("x", data, [4, 3]))[y];
        var act = Run(split.Prefix, ("x", data, [4, 3]))[h];
        AssertClose(full, Run(split.Suffix, ("x", data, [4, 3]), (h, act, [4, 3]))[y], 1e-6f);
    }

    [Fact]
    public void Frozen_graph_output_is_passed_through_the_suffix()
    {
        var model = new MlpModelBuilder(4).Layer(6).Layer(3).Build(seed: 4);
        model.Graph.Output.Add(ValueInfos.Tensor("act1_out", DataType.Float, "batch", 6L));
        var split = FrozenPrefixSplitter.Split(model, ["fc2.weight"]);
        Assert.Equal(["logits", "act1_out"], split.Suffix.Graph.Output.Select(o => o.Name));

        var x = Random(2 * 4, seed: 5);
        var full = Run(model, ("features", x, [2, 4]));
        var act = Run(split.Prefix, ("features", x, [2, 4]))["act1_out"];
        var suffix = Run(split.Suffix, ("act1_out", act, [2, 6]));
        AssertClose(full["logits"], suffix["logits"], 1e-6f);
        AssertClose(full["act1_out"], suffix["act1_out"], 0f);
    }

    [Fact]
    public void Manifest_round_trips_through_json()
    {
        var (model, trainable) = AttentionModel();
        var split = FrozenPrefixSplitter.Split(model, trainable);
        var dir = Directory.CreateTempSubdirectory("onnxtune-split-");
        try
        {
            split.Save(dir.FullName);
            var loaded = PrefixSplitManifest.Load(dir.FullName);
            Assert.Equal(split.Manifest.PrefixSha256, loaded.PrefixSha256);
            Assert.Equal(64, loaded.PrefixSha256.Length);
            Assert.Equal(split.Manifest.Frontier, loaded.Frontier, (a, b) => a.Name == b.Name && a.ElementType == b.ElementType && a.Shape.SequenceEqual(b.Shape));
            Assert.Contains("\"frontier\"", File.ReadAllText(Path.Combine(dir.FullName, PrefixSplitManifest.FileName)), StringComparison.Ordinal);
            using var prefix = new InferenceSession(Path.Combine(dir.FullName, PrefixSplit.PrefixFileName));
            Assert.Equal(split.Manifest.Frontier.Select(t => t.Name), prefix.OutputNames);
        }
        finally { dir.Delete(recursive: true); }
    }

    [Fact]
    public void Bad_requests_fail_with_a_message_naming_the_problem()
    {
        var model = new MlpModelBuilder(4).Layer(6).Layer(3).Build();
        var unknown = Assert.Throws<PrefixSplitException>(() => FrozenPrefixSplitter.Split(model, ["fc9.weight"]));
        Assert.Contains("fc9.weight", unknown.Message, StringComparison.Ordinal);
        var nothing = Assert.Throws<PrefixSplitException>(() => FrozenPrefixSplitter.Split(model, ["fc1.weight"]));
        Assert.Contains("no frozen prefix", nothing.Message, StringComparison.Ordinal);
        Assert.Throws<PrefixSplitException>(() => FrozenPrefixSplitter.Split(model, []));
    }

    /// <summary>
    /// A one-head attention block in the style of a BERT export: a frozen projection and an additive mask computed
    /// from an int64 attention mask, then trainable Q/K/V with a Shape → Gather → Concat → Reshape chain.
    /// </summary>
    internal static (ModelProto Model, string[] Trainable) AttentionModel()
    {
        var f = new ModelFactory(opset: 18, seed: 5);
        var x = f.Input("x", DataType.Float, "batch", "seq", 8L);
        var mask = f.Input("mask", DataType.Int64, "batch", "seq");
        var w0 = f.Param("embed.weight", [8, 8]);
        var hidden = f.Editor.Reserve("hidden");
        f.Editor.AddNode("Tanh", [f.Node("MatMul", [x, w0])], [hidden]);
        var maskFloat = f.Node("Cast", [mask], Attr.Int("to", (long)DataType.Float));
        var one = f.ConstFloat("one", [1f]);
        var big = f.ConstFloat("neg_big", [-10000f]);
        var axis1 = f.Const("axis1", [1]);
        var maskBias = f.Editor.Reserve("mask_bias");
        f.Editor.AddNode("Unsqueeze", [f.Node("Mul", [f.Node("Sub", [one, maskFloat]), big]), axis1], [maskBias]);

        var wq = f.Param("attn.query.weight", [8, 8]);
        var wk = f.Param("attn.key.weight", [8, 8]);
        var wv = f.Param("attn.value.weight", [8, 8]);
        var q = f.Node("MatMul", [hidden, wq]);
        var k = f.Node("MatMul", [hidden, wk]);
        var v = f.Node("MatMul", [hidden, wv]);
        var kt = f.Node("Transpose", [k], Attr.Ints("perm", 0, 2, 1));
        var scale = f.ConstFloat("scale", [MathF.Sqrt(8)]);
        var scores = f.Node("Add", [f.Node("Div", [f.Node("MatMul", [q, kt]), scale]), maskBias]);
        var probs = f.Node("Softmax", [scores], Attr.Int("axis", -1));
        var context = f.Node("MatMul", [probs, v]);
        // Reshape to [batch, seq, 2, 4] and back with shapes taken from the hidden state.
        var shape = f.Node("Shape", [hidden]);
        var b = f.Node("Gather", [shape, f.Const("i0", [0])], Attr.Int("axis", 0));
        var s = f.Node("Gather", [shape, f.Const("i1", [1])], Attr.Int("axis", 0));
        var heads = f.Node("Concat", [b, s, f.Const("heads", [2, 4])], Attr.Int("axis", 0));
        var split4 = f.Node("Reshape", [context, heads]);
        var back = f.Node("Concat", [b, s, f.Const("width", [8])], Attr.Int("axis", 0));
        var merged = f.Node("Reshape", [split4, back]);
        var wo = f.Param("attn.output.weight", [8, 4]);
        var y = f.Editor.Add("ReduceMean", [f.Node("MatMul", [merged, wo]), f.Const("axes", [1])], "y", Attr.Int("keepdims", 0));
        var model = f.Output(y, "batch", 4L);
        return (model, ["attn.query.weight", "attn.key.weight", "attn.value.weight", "attn.output.weight"]);
    }

    internal static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    internal static Dictionary<string, float[]> Run(ModelProto model, params (string Name, Array Data, long[] Shape)[] inputs)
    {
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        var values = inputs.Select(i => i.Data switch
        {
            float[] fl => OrtValue.CreateTensorValueFromMemory(fl, i.Shape),
            long[] l => OrtValue.CreateTensorValueFromMemory(l, i.Shape),
            _ => throw new ArgumentException("float or int64 only"),
        }).ToList();
        try
        {
            using var outputs = session.Run(new RunOptions(), inputs.Select(i => i.Name).ToList(), values, session.OutputNames);
            return session.OutputNames.Zip(outputs).ToDictionary(p => p.First, p => p.Second.GetTensorDataAsSpan<float>().ToArray());
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    internal static void AssertClose(float[] expected, float[] actual, float tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
            Assert.True(MathF.Abs(expected[i] - actual[i]) <= tolerance, $"index {i}: expected {expected[i]}, got {actual[i]}");
    }
}
