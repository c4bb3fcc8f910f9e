using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Autodiff.Transforms;
using OnnxTune.Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Transforms;

public sealed class OpsetUpgradeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxtune-opset-upgrade-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static float[] Random(long count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, (int)count).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
    }

    /// <summary>Runs the model in ONNX Runtime on the given float inputs; returns every graph output.</summary>
    private static Dictionary<string, float[]> Run(ModelProto model, params (string Name, float[] Data, long[] Shape)[] inputs)
    {
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        var values = inputs.Select(i => OrtValue.CreateTensorValueFromMemory(i.Data, i.Shape)).ToList();
        try
        {
            var outputs = model.Graph.Output.Select(o => o.Name).ToList();
            using var results = session.Run(new RunOptions(), inputs.Select(i => i.Name).ToList(), values, outputs);
            return outputs.Select((n, k) => (n, results[k].GetTensorDataAsSpan<float>().ToArray())).ToDictionary(p => p.n, p => p.Item2, StringComparer.Ordinal);
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance = 1e-6)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"element {i}: expected {expected[i]}, got {actual[i]}");
    }

    /// <summary>Upgrades, checks the result is opset 13 and leaves the source alone, and compares ORT outputs.</summary>
    private static ModelProto UpgradeAndCompare(ModelProto model, params (string Name, float[] Data, long[] Shape)[] inputs)
    {
        var before = OnnxModelWriter.ToBytes(model);
        var upgraded = TrainingGraphBuilder.UpgradeOpset(model);
        Assert.Equal(before, OnnxModelWriter.ToBytes(model)); // the caller's model is not modified
        Assert.NotSame(model, upgraded);
        Assert.Equal(13L, OpsetUpgrade.DefaultOpset(upgraded));
        Assert.Equal(13L, TrainingGraphBuilder.CheckModel(upgraded));
        var expected = Run(model, inputs);
        var actual = Run(upgraded, inputs);
        foreach (var (name, values) in expected) AssertClose(values, actual[name]);
        return upgraded;
    }

    /// <summary>The model with only its opset import raised: what keeping every node as is would mean.</summary>
    private static ModelProto RelabelledOnly(ModelProto model)
    {
        var copy = model.Clone();
        foreach (var o in copy.OpsetImport) o.Version = 13;
        return copy;
    }

    [Theory]
    [InlineData("Softmax", 12, new long[] { 2, 3, 4 }, 1L)]
    [InlineData("Softmax", 11, new long[] { 2, 3, 4, 5 }, 1L)]
    [InlineData("Softmax", 12, new long[] { 2, 3, 4, 5 }, 2L)]
    [InlineData("Softmax", 12, new long[] { 2, 3, 4 }, -2L)]
    [InlineData("Softmax", 11, new long[] { 2, 3, 4 }, 0L)]
    [InlineData("LogSoftmax", 12, new long[] { 2, 3, 4 }, 1L)]
    [InlineData("LogSoftmax", 11, new long[] { 3, 2, 2, 5 }, 1L)]
    [InlineData("Hardmax", 12, new long[] { 2, 3, 4 }, 1L)]
    public void Softmax_family_at_a_non_last_axis_keeps_the_2d_coercion(string op, long opset, long[] dims, long axis)
    {
        var f = new ModelFactory(opset: opset);
        var x = f.Input("x", DataType.Float, dims.Cast<object>().ToArray());
        var y = f.Node(op, [x], Attr.Int("axis", axis));
        var model = f.Output(y, dims.Cast<object>().ToArray());
        var input = ("x", Random(dims.Aggregate(1L, (a, b) => a * b), 7), dims);
        var upgraded = UpgradeAndCompare(model, input);
        Assert.Contains(upgraded.Graph.Node, n => n.OpType == "Flatten");
        Assert.All(upgraded.Graph.Node.Where(n => n.OpType == op), n => Assert.Equal(-1, n.GetInt("axis", 1)));
        // Keeping the node as is at opset 13 would normalise over one dim only: a different result.
        var kept = Run(RelabelledOnly(model), input)[y];
        var original = Run(model, input)[y];
        Assert.Contains(Enumerable.Range(0, kept.Length), i => Math.Abs(kept[i] - original[i]) > 1e-3);
    }

    [Fact]
    public void Softmax_with_the_default_axis_on_an_input_of_unknown_rank_is_rewritten()
    {
        var f = new ModelFactory(opset: 12);
        f.Editor.Reserve("x");
        f.Editor.AddInput(ValueInfos.Tensor("x", DataType.Float, null)); // no shape: the rank is unknown
        var y = f.Node("Softmax", ["x"]);
        var model = f.Output(y);
        var input = ("x", Random(24, 3), new long[] { 2, 3, 4 });
        var upgraded = UpgradeAndCompare(model, input);
        Assert.Contains(upgraded.Graph.Node, n => n.OpType == "Reshape");
        var kept = Run(RelabelledOnly(model), input)[y];
        Assert.Contains(Enumerable.Range(0, kept.Length), i => Math.Abs(kept[i] - Run(model, input)[y][i]) > 1e-3);
    }

    [Theory]
    [InlineData(2L)]
    [InlineData(-1L)]
    public void Softmax_over_the_last_dim_stays_one_node(long axis)
    {
        var f = new ModelFactory(opset: 12);
        var x = f.Input("x", DataType.Float, 2L, 3L, 4L);
        var y = f.Node("Softmax", [x], Attr.Int("axis", axis));
        var model = f.Output(y, 2L, 3L, 4L);
        var upgraded = UpgradeAndCompare(model, ("x", Random(24, 5), [2, 3, 4]));
        var node = Assert.Single(upgraded.Graph.Node);
        Assert.Equal(-1, node.GetInt("axis", 1));
    }

    [Theory]
    [InlineData(11, 1L)]
    [InlineData(12, 0L)]
    public void ReduceSum_axes_attribute_becomes_an_input(long opset, long keepdims)
    {
        var f = new ModelFactory(opset: opset);
        var x = f.Input("x", DataType.Float, 2L, 3L, 4L);
        var y = f.Node("ReduceSum", [x], Attr.Ints("axes", 0, 2), Attr.Int("keepdims", keepdims));
        var all = f.Node("ReduceSum", [x], Attr.Int("keepdims", 0)); // no axes: every axis, at both opsets
        f.Output(y);
        var model = f.Output(all);
        var upgraded = UpgradeAndCompare(model, ("x", Random(24, 1), [2, 3, 4]));
        var nodes = upgraded.Graph.Node.Where(n => n.OpType == "ReduceSum").ToList();
        Assert.All(nodes, n => Assert.Null(n.Find("axes")));
        Assert.Equal(2, nodes[0].Input.Count);
        Assert.Equal([0L, 2L], TensorProtos.ToInt64Array(upgraded.Graph.Initializer.Single(t => t.Name == nodes[0].Input[1])));
        Assert.Single(nodes[1].Input);
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    public void Squeeze_and_Unsqueeze_axes_attributes_become_inputs(long opset)
    {
        var f = new ModelFactory(opset: opset);
        var x = f.Input("x", DataType.Float, 2L, 1L, 3L);
        var u = f.Node("Unsqueeze", [x], Attr.Ints("axes", 0, 4));      // [1, 2, 1, 3, 1]
        var s = f.Node("Squeeze", [u], Attr.Ints("axes", 0, -1));        // [2, 1, 3]
        var all = f.Node("Squeeze", [s]);                                // [2, 3]
        var model = f.Output(all);
        var upgraded = UpgradeAndCompare(model, ("x", Random(6, 2), [2, 1, 3]));
        Assert.All(upgraded.Graph.Node, n => Assert.Null(n.Find("axes")));
        Assert.Equal(2, upgraded.Graph.Node.Count(n => n.Input.Count == 2));
        // Keeping the attribute form at opset 13 is not a valid model for ONNX Runtime.
        Assert.ThrowsAny<OnnxRuntimeException>(() => Run(RelabelledOnly(model), ("x", Random(6, 2), [2, 1, 3])));
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    public void Split_sizes_attribute_becomes_an_input(long opset)
    {
        var f = new ModelFactory(opset: opset);
        var x = f.Input("x", DataType.Float, 2L, 6L);
        f.Editor.AddNode("Split", [x], ["a", "b", "c"], Attr.Int("axis", 1), Attr.Ints("split", 1, 2, 3));
        f.Editor.AddNode("Split", [x], ["d", "e"], Attr.Int("axis", 0)); // equal parts: no sizes at either opset
        foreach (var o in new[] { "a", "b", "c", "d" }) f.Output(o);
        var model = f.Output("e");
        var upgraded = UpgradeAndCompare(model, ("x", Random(12, 4), [2, 6]));
        var splits = upgraded.Graph.Node.Where(n => n.OpType == "Split").ToList();
        Assert.All(splits, n => Assert.Null(n.Find("split")));
        Assert.Equal([1L, 2L, 3L], TensorProtos.ToInt64Array(upgraded.Graph.Initializer.Single(t => t.Name == splits[0].Input[1])));
        Assert.Single(splits[1].Input);
    }

    [Fact]
    public void Opset_11_Dropout_ratio_attribute_becomes_the_ratio_input_in_inference_mode()
    {
        var f = new ModelFactory(opset: 11);
        var x = f.Input("x", DataType.Float, 4L, 5L);
        f.Editor.AddNode("Dropout", [x], ["y", "mask"], Attr.Float("ratio", 0.3f));
        var model = f.Output("y", 4L, 5L);
        var upgraded = UpgradeAndCompare(model, ("x", Random(20, 6), [4, 5]));
        var dropout = upgraded.Graph.Node.Single(n => n.OpType == "Dropout");
        Assert.Null(dropout.Find("ratio"));
        Assert.Equal(2, dropout.Input.Count); // data, ratio; no training_mode = inference
        var constant = upgraded.Graph.Node.Single(n => n.Output.Contains(dropout.Input[1]));
        Assert.Equal("Constant", constant.OpType);
        Assert.Equal([0.3f], TensorProtos.ToFloatArray(constant.Find("value")!.T));
        // No float initializer is added for a parameter selection to pick up.
        Assert.Equal(model.Graph.Initializer.Count, upgraded.Graph.Initializer.Count);
    }

    [Fact]
    public void New_names_do_not_collide_with_existing_ones()
    {
        var f = new ModelFactory(opset: 12);
        var x = f.Input("x", DataType.Float, 2L, 3L, 4L);
        f.Editor.AddNode("Softmax", [x], ["softmax_opset13_flat"], Attr.Int("axis", 1)).Name = "softmax";
        f.Editor.AddNode("ReduceSum", ["softmax_opset13_flat"], ["sum_axes"], Attr.Ints("axes", 1)).Name = "sum";
        var model = f.Output("sum_axes");
        var upgraded = UpgradeAndCompare(model, ("x", Random(24, 8), [2, 3, 4]));
        var produced = upgraded.Graph.Node.SelectMany(n => n.Output).Concat(upgraded.Graph.Initializer.Select(t => t.Name)).ToList();
        Assert.Equal(produced.Count, produced.Distinct().Count());
        var names = upgraded.Graph.Node.Select(n => n.Name).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
    }

    [Fact]
    public void A_model_at_opset_13_or_newer_is_returned_as_is()
    {
        var f = new ModelFactory(opset: 13);
        var x = f.Input("x", DataType.Float, 2L, 3L);
        var model = f.Output(f.Node("Softmax", [x], Attr.Int("axis", 1)));
        Assert.Same(model, TrainingGraphBuilder.UpgradeOpset(model));
    }

    [Fact]
    public void Opset_10_is_refused_with_the_typed_error_naming_the_opset()
    {
        var f = new ModelFactory(opset: 10);
        var x = f.Input("x", DataType.Float, 2L, 3L);
        var w = f.Param("w", [2, 3]);
        var model = f.Output(f.Node("Mul", [x, w]), 2L, 3L);
        foreach (var act in new Action[]
        {
            () => TrainingGraphBuilder.UpgradeOpset(model),
            () => ArtifactBuilder.Build(model, new ArtifactOptions { Loss = new LossSpec { Kind = LossKind.Mse } }),
            () => GradientChecker.Check(model),
        })
        {
            var e = Assert.Throws<UnsupportedModelException>(act);
            Assert.Contains("opset 10", e.Message);
            Assert.Contains("11 and 12 are upgraded", e.Message);
        }
    }

    [Fact]
    public void Upsample_and_rewrites_inside_subgraphs_are_refused()
    {
        var f = new ModelFactory(opset: 11);
        var x = f.Input("x", DataType.Float, 1L, 1L, 2L, 2L);
        var scales = f.ConstFloat("scales", [1, 1, 2, 2], 4);
        var upsample = f.Output(f.Node("Upsample", [x, scales]));
        Assert.Contains("Upsample", Assert.Throws<UnsupportedModelException>(() => TrainingGraphBuilder.UpgradeOpset(upsample)).Message);

        var g = new ModelFactory(opset: 12);
        var c = g.Input("c", DataType.Bool);
        var y = g.Input("y", DataType.Float, 2L, 3L, 4L);
        GraphProto Branch(string op)
        {
            var branch = new GraphProto { Name = op + "_branch" };
            branch.Node.Add(new NodeProto { OpType = op, Name = op + "_inside", Input = { y }, Output = { op + "_out" } });
            branch.Output.Add(ValueInfos.Tensor(op + "_out", DataType.Float, null));
            return branch;
        }
        var ifNode = g.Editor.AddNode("If", [c], ["z"]);
        ifNode.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("Softmax") });
        ifNode.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("Relu") });
        var withIf = g.Output("z");
        var e = Assert.Throws<UnsupportedModelException>(() => TrainingGraphBuilder.UpgradeOpset(withIf));
        Assert.Contains("Softmax", e.Message);
        Assert.Contains("subgraph", e.Message);
    }

    // x -> *w1 -> Softmax(axis=1, 3-D) -> Unsqueeze/Squeeze -> Split -> (*w2 -> ReduceSum axes) + part -> Dropout -> ReduceSum axes.
    private static ModelProto GradientModel(long opset)
    {
        var f = new ModelFactory(opset: opset, seed: 11);
        var x = f.Input("x", DataType.Float, 2L, 3L, 4L);
        var w1 = f.Param("w1", [2, 3, 4]);
        var w2 = f.Param("w2", [2, 3, 3]);
        var s = f.Node("Softmax", [f.Node("Mul", [x, w1])], Attr.Int("axis", 1));
        var u = f.Node("Unsqueeze", [s], Attr.Ints("axes", 0));
        var q = f.Node("Squeeze", [u], Attr.Ints("axes", 0));
        f.Editor.AddNode("Split", [q], ["part_a", "part_b"], Attr.Int("axis", 2), Attr.Ints("split", 1, 3));
        var r = f.Node("ReduceSum", [f.Node("Mul", ["part_b", w2])], Attr.Ints("axes", 2), Attr.Int("keepdims", 1));
        var e = f.Node("Add", [r, "part_a"]);
        string dropped;
        if (opset < 12)
            dropped = f.Editor.AddNode("Dropout", [e], ["dropped"], Attr.Float("ratio", 0.25f)).Output[0];
        else
            dropped = f.Editor.AddNode("Dropout", [e], ["dropped"]).Output[0]; // opset 12 form, default ratio, inference
        var y = f.Node("ReduceSum", [dropped], Attr.Ints("axes", 1), Attr.Int("keepdims", 0));
        return f.Output(y, 2L, 1L);
    }

    [Theory]
    [InlineData(12)]
    [InlineData(11)]
    public void Gradients_through_the_upgraded_ops_match_finite_differences(long opset)
    {
        var model = GradientModel(opset);
        var report = GradientAssert.Passes(model, new GradientCheckOptions { Selection = new ParameterSelection { Trainable = ["w*"] } });
        Assert.Equal(["w1", "w2"], report.Parameters.Select(p => p.Name).Order().ToArray());
    }

    // An opset-12 attention-like classifier: scores = (x Wq)(x Wk)^T, Softmax over the query axis (axis=1, which
    // opset 12 coerces to 2-D), context = attn x, mean pooling by ReduceSum(axes attribute), Unsqueeze/Squeeze, Gemm.
    private static ModelProto AttentionModel()
    {
        var f = new ModelFactory(opset: 12, seed: 21);
        var x = f.Input("features", DataType.Float, "batch", 4L, 6L);
        var wq = f.Param("wq", [6, 6], -0.5, 0.5);
        var wk = f.Param("wk", [6, 6], -0.5, 0.5);
        var wo = f.Param("wo", [6, 3], -0.5, 0.5);
        var bo = f.Param("bo", [3], -0.1, 0.1);
        var q = f.Node("MatMul", [x, wq]);
        var k = f.Node("MatMul", [x, wk]);
        var scores = f.Node("MatMul", [q, f.Node("Transpose", [k], Attr.Ints("perm", 0, 2, 1))]);
        var attn = f.Node("Softmax", [scores], Attr.Int("axis", 1));
        var context = f.Node("MatMul", [attn, x]);
        var pooled = f.Node("ReduceSum", [context], Attr.Ints("axes", 1), Attr.Int("keepdims", 1)); // [batch, 1, 6]
        var flat = f.Node("Squeeze", [f.Node("Unsqueeze", [pooled], Attr.Ints("axes", 0))], Attr.Ints("axes", 0, 2));
        f.Editor.AddNode("Gemm", [flat, wo, bo], ["logits"]);
        return f.Output("logits", "batch", 3L);
    }

    private static TrainingBatch Batch(int seed, int batch)
    {
        var rng = new Random(seed);
        var x = new float[batch * 4 * 6];
        var y = new long[batch];
        for (var i = 0; i < batch; i++)
        {
            y[i] = rng.Next(3);
            for (var j = 0; j < 24; j++) x[i * 24 + j] = (float)(rng.NextDouble() - 0.5 + (j % 6 % 3 == y[i] ? 0.8 : 0.0));
        }
        return new TrainingBatch().Add("features", x, batch, 4, 6).WithLabels(y, batch);
    }

    [Fact]
    public void An_opset_12_model_trains_and_exports_into_the_original_file()
    {
        var model = AttentionModel();
        var original = Path.Combine(_dir, "model12.onnx");
        OnnxModelWriter.Save(model, original);
        var artifactsDir = Path.Combine(_dir, "artifacts");
        var artifacts = ArtifactBuilder.Build(OnnxModelReader.Load(original), new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.2 },
        }, ArtifactBuilder.FileSha256(original));
        Assert.Equal(13L, OpsetUpgrade.DefaultOpset(artifacts.Inference)); // served and exported: the upgraded model
        Assert.Equal(ArtifactBuilder.FileSha256(original), artifacts.Manifest.SourceModelSha256);
        Assert.Equal(["bo", "wk", "wo", "wq"], artifacts.Manifest.TrainableParameters.Select(p => p.Name).Order().ToArray());
        ArtifactBuilder.Save(artifacts, artifactsDir);

        var batch = Batch(1, 8);
        using var engine = TrainingEngine.Open(artifactsDir);
        var losses = new List<float>();
        for (var i = 0; i < 12; i++)
        {
            losses.Add(engine.TrainStep(batch));
            engine.OptimizerStep();
        }
        Assert.True(losses[^1] < losses[0] * 0.9, $"loss did not decrease: {string.Join(", ", losses)}");

        var eval = engine.EvalStep(batch).Outputs["logits"].AsFloats();
        var x = ((Memory<float>)batch.Inputs["features"].Memory).ToArray();
        var exportedUpgraded = Path.Combine(_dir, "trained13.onnx");
        engine.ExportInferenceModel(exportedUpgraded);
        var exportedOriginal = Path.Combine(_dir, "trained12.onnx");
        engine.ExportInferenceModel(exportedOriginal, original);
        var trained12 = OnnxModelReader.Load(exportedOriginal);
        Assert.Equal(12L, OpsetUpgrade.DefaultOpset(trained12));
        Assert.Equal(13L, OpsetUpgrade.DefaultOpset(OnnxModelReader.Load(exportedUpgraded)));
        var feeds = ("features", x, new long[] { 8, 4, 6 });
        var before = Run(model, feeds)["logits"];
        foreach (var path in new[] { exportedUpgraded, exportedOriginal })
        {
            var logits = Run(OnnxModelReader.Load(path), feeds)["logits"];
            AssertClose(eval, logits, 1e-4);
        }
        Assert.Contains(Enumerable.Range(0, before.Length), i => Math.Abs(before[i] - eval[i]) > 1e-3); // the weights did change
    }

    [Fact]
    public void An_opset_12_model_takes_LoRA_adapters_with_dropout_and_trains()
    {
        var model = AttentionModel();
        var artifacts = ArtifactBuilder.Build(model, new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.2 },
            Lora = new LoraOptions { Targets = ["wq", "wk"], Rank = 2, Dropout = 0.1 },
        });
        Assert.Equal(13L, OpsetUpgrade.DefaultOpset(artifacts.Inference));
        // The training graph holds the adapters' opset-12+ Dropout next to the upgraded forward graph.
        Assert.Contains(artifacts.Training.Graph.Node, n => n.OpType == "Dropout" && n.Input.Count == 3);
        var dir = Path.Combine(_dir, "lora");
        ArtifactBuilder.Save(artifacts, dir);
        using var engine = TrainingEngine.Open(dir);
        var batch = Batch(2, 8);
        var first = engine.TrainStep(batch);
        engine.OptimizerStep();
        for (var i = 0; i < 10; i++) { engine.TrainStep(batch); engine.OptimizerStep(); }
        var last = engine.TrainStep(batch);
        Assert.True(float.IsFinite(first) && last < first, $"loss {first} -> {last}");
    }

    [Fact]
    public void An_opset_12_model_splits_into_an_upgraded_prefix_and_suffix_with_the_same_outputs()
    {
        var model = AttentionModel();
        var split = FrozenPrefixSplitter.Split(model, ["wo", "bo"]);
        Assert.Equal(13L, OpsetUpgrade.DefaultOpset(split.Prefix));
        Assert.Equal(13L, OpsetUpgrade.DefaultOpset(split.Suffix));
        var x = Random(3 * 24, 9);
        var full = Run(model, ("features", x, [3, 4, 6]))["logits"];
        var prefixOut = Run(split.Prefix, ("features", x, [3, 4, 6]));
        var feeds = split.Manifest.Frontier.Select(f => (f.Name, prefixOut[f.Name], f.Shape.Select((d, i) => i == 0 ? 3L : long.Parse(d, System.Globalization.CultureInfo.InvariantCulture)).ToArray())).ToArray();
        AssertClose(full, Run(split.Suffix, feeds)["logits"], 1e-5);
    }
}
