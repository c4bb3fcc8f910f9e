using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Training.GradientChecking;
using Xunit.Abstractions;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class VisionOpRuleTests(ITestOutputHelper output)
{
    private static readonly GradientCheckOptions OnlyW = new()
    {
        Selection = new ParameterSelection { Trainable = ["w*"] },
        DimValues = new Dictionary<string, long> { ["batch"] = 3 },
        MaxElementsPerParameter = 60,
    };

    private GradientCheckReport Check(global::Onnx.ModelProto model, bool requireDouble, GradientCheckOptions? options = null)
    {
        var report = GradientAssert.Passes(model, options ?? OnlyW, requireDouble);
        output.WriteLine($"{(report.DoublePrecision ? "float64" : "float32")}: " + string.Join(", ", report.Parameters.Select(p => $"{p.Name} rel {p.MaxRelativeError:E1}")));
        return report;
    }

    [Fact]
    public void Relu6_is_Clip_with_min_and_max_inputs()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [4, 6], -2, 8);
        var y = f.Node("Clip", [w, f.ConstFloat("lo", [0f]), f.ConstFloat("hi", [6f])]);
        Check(f.Output(y), requireDouble: true);
    }

    [Theory]
    [InlineData(0.2f, 0.5f)]
    [InlineData(1f / 6, 0.5f)]
    public void HardSigmoid(float alpha, float beta)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [4, 6], -6, 6);
        Check(f.Output(f.Node("HardSigmoid", [w], Attr.Float("alpha", alpha), Attr.Float("beta", beta))), requireDouble: true);
    }

    [Fact]
    public void HardSwish()
    {
        var f = new ModelFactory(opset: 14);
        var w = f.Param("w", [5, 8], -5, 5);
        Check(f.Output(f.Node("HardSwish", [w])), requireDouble: true);
    }

    [Theory]
    [InlineData(new long[] { 1, 2, 0, 1 }, false)]
    [InlineData(new long[] { 0, 0, 2, 3 }, true)]
    public void Pad_constant(long[] pads, bool withValue)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4]);
        var inputs = withValue ? new[] { w, f.Const("pads", pads), f.ConstFloat("value", [0.5f]) } : [w, f.Const("pads", pads)];
        Check(f.Output(f.Node("Mul", [f.Node("Pad", inputs), f.Node("Pad", inputs)])), requireDouble: true);
    }

    [Fact]
    public void Pad_with_axes_opset18()
    {
        var f = new ModelFactory(opset: 18);
        var w = f.Param("w", [2, 3, 4]);
        Check(f.Output(f.Node("Pad", [w, f.Const("pads", [1, 2, 0, 1]), f.ConstFloat("value", [0f]), f.Const("axes", [2, 0])])), requireDouble: true);
    }

    private static (ModelFactory F, string Y) BatchNormModel(int rank, string scaleName = "w_scale", string biasName = "w_b")
    {
        var f = new ModelFactory();
        long[] dims = rank == 2 ? [5, 4] : rank == 3 ? [3, 4, 5] : [2, 4, 3, 2];
        var x = f.Param("w_x", dims, -2, 2);
        var y = f.Node("BatchNormalization", [x, f.Param(scaleName, [4], 0.5, 1.5), f.Param(biasName, [4]), f.Param("running_mean", [4], -0.5, 0.5), f.Param("running_var", [4], 0.5, 1.5)],
            Attr.Float("epsilon", 1e-3f), Attr.Float("momentum", 0.9f));
        // A non-linear head so the batch-statistics terms of the gradient matter (sum(R * y) alone is linear in xhat).
        return (f, f.Node("Mul", [y, f.Node("Tanh", [y])]));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void BatchNormalization_training_mode_uses_batch_statistics(int rank)
    {
        var (f, y) = BatchNormModel(rank);
        var report = Check(f.Output(y), requireDouble: true);
        Assert.DoesNotContain(report.Parameters, p => p.Name.StartsWith("running", StringComparison.Ordinal));
    }

    [Fact]
    public void BatchNormalization_frozen_layer_uses_running_statistics()
    {
        // Scale and bias frozen: the layer keeps its running statistics (eval-mode gradient to x).
        var (f, y) = BatchNormModel(4, "bn_scale", "bn_b");
        var model = f.Output(y);
        Check(model, requireDouble: true);
        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection { Trainable = ["w*"] }, new LossSpec { Kind = LossKind.Mse }, gradientAccumulation: false);
        Assert.Empty(graphs.State);
        Assert.DoesNotContain(graphs.Training.Graph.Node, n => n.OpType == "ReduceSum" && n.Input[0] == "w_x");
        // Asked otherwise: batch statistics for frozen layers too.
        var all = TrainingGraphBuilder.Build(model, new ParameterSelection { Trainable = ["w*"] }, new LossSpec { Kind = LossKind.Mse }, gradientAccumulation: false,
            batchNorm: new BatchNormTraining { Mode = BatchNormMode.AllLayers });
        Assert.Equal(["running_mean", "running_var"], all.State.Select(s => s.Name));
        Check(model, requireDouble: true, OnlyW with { BatchNorm = BatchNormMode.AllLayers });
    }

    [Fact]
    public void BatchNormalization_eval_mode_everywhere_when_asked()
    {
        var (f, y) = BatchNormModel(4);
        Check(f.Output(y), requireDouble: true, OnlyW with { BatchNorm = BatchNormMode.None });
    }

    [Fact]
    public void BatchNormalization_running_statistics_update_as_pytorch()
    {
        // running = 0.9 * running + 0.1 * stat, running_var with the unbiased batch variance; the BN output uses the biased one.
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, "batch", 2L, 3L);
        var y = f.Node("BatchNormalization", [x, f.Param("w_scale", [2], 0.5, 1.5), f.Param("w_b", [2]), f.ConstFloat("rm", [0.5f, -1f], 2), f.ConstFloat("rv", [2f, 0.25f], 2)],
            Attr.Float("epsilon", 1e-5f), Attr.Float("momentum", 0.9f));
        var model = f.Output(f.Node("ReduceSum", [f.Node("Mul", [y, y])], Attr.Int("keepdims", 0)));
        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection(), new LossSpec { Kind = LossKind.None, OutputName = model.Graph.Output[0].Name }, gradientAccumulation: false);
        Assert.Equal(["rm", "rv"], graphs.State.Select(s => s.Name));
        Assert.Equal(["rm.running.out", "rv.running.out"], graphs.StateOutputs);
        Assert.Contains(graphs.Eval.Graph.Input, i => i.Name == "rm");
        Assert.DoesNotContain(graphs.Trainable, p => p.Name is "rm" or "rv");
        var data = new float[] { 1, 2, 3, -1, 0, 4, 0.5f, 2, 1, 3, -2, 1 }; // [2, 2, 3]
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(OnnxTune.Onnx.ModelIO.OnnxModelWriter.ToBytes(graphs.Training));
        var feeds = new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue>
        {
            ["x"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(data, [2, 2, 3]),
            ["rm"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new[] { 0.5f, -1f }, [2]),
            ["rv"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new[] { 2f, 0.25f }, [2]),
            ["w_scale"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new[] { 1f, 1f }, [2]),
            ["w_b"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new[] { 0f, 0f }, [2]),
        };
        using var runOptions = new Microsoft.ML.OnnxRuntime.RunOptions();
        using var outputs = session.Run(runOptions, feeds, ["rm.running.out", "rv.running.out"]);
        var rm = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        var rv = outputs[1].GetTensorDataAsSpan<float>().ToArray();
        for (var c = 0; c < 2; c++)
        {
            var v = new[] { 0, 1, 2 }.SelectMany(i => new[] { data[c * 3 + i], data[6 + c * 3 + i] }).Select(a => (double)a).ToArray();
            var mean = v.Average();
            var unbiased = v.Sum(a => (a - mean) * (a - mean)) / (v.Length - 1);
            Assert.Equal(0.9 * (c == 0 ? 0.5 : -1) + 0.1 * mean, rm[c], 5);
            Assert.Equal(0.9 * (c == 0 ? 2 : 0.25) + 0.1 * unbiased, rv[c], 5);
        }
        foreach (var v in feeds.Values) v.Dispose();
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public void InstanceNormalization(int rank)
    {
        var f = new ModelFactory();
        long[] dims = rank == 3 ? [2, 3, 5] : [2, 3, 4, 3];
        var x = f.Param("w_x", dims, -2, 2);
        var y = f.Node("InstanceNormalization", [x, f.Param("w_scale", [3], 0.5, 1.5), f.Param("w_b", [3])], Attr.Float("epsilon", 1e-3f));
        Check(f.Output(f.Node("Mul", [y, f.Node("Tanh", [y])])), requireDouble: true);
    }

    [Theory]
    [InlineData("asymmetric", "floor", new[] { 1f, 1f, 2f, 2f })]
    [InlineData("half_pixel", "round_prefer_floor", new[] { 1f, 1f, 1.5f, 2.5f })]
    [InlineData("align_corners", "round_prefer_ceil", new[] { 1f, 1f, 0.6f, 1.7f })]
    public void Resize_nearest(string transform, string rounding, float[] scales)
    {
        var f = new ModelFactory(opset: 13);
        var w = f.Param("w", [2, 3, 4, 3]);
        var y = f.Node("Resize", [w, "", f.ConstFloat("scales", scales, 4)], Attr.String("mode", "nearest"),
            Attr.String("coordinate_transformation_mode", transform), Attr.String("nearest_mode", rounding));
        Check(f.Output(y), requireDouble: false); // ONNX Runtime's Resize has no float64 kernel; nearest is linear in x, so float32 finite differences are exact enough
    }

    [Fact]
    public void Resize_nearest_with_sizes()
    {
        var f = new ModelFactory(opset: 13);
        var w = f.Param("w", [1, 2, 5, 4]);
        var y = f.Node("Resize", [w, "", "", f.Const("sizes", [1, 2, 3, 7])], Attr.String("mode", "nearest"));
        Check(f.Output(y), requireDouble: false);
    }

    [Theory]
    [InlineData("asymmetric", new[] { 1f, 1f, 2f, 2f })]
    [InlineData("half_pixel", new[] { 1f, 1f, 1.5f, 0.7f })]
    [InlineData("pytorch_half_pixel", new[] { 1f, 1f, 2.5f, 1f })]
    [InlineData("align_corners", new[] { 1f, 1f, 1.7f, 2f })]
    public void Resize_linear(string transform, float[] scales)
    {
        var f = new ModelFactory(opset: 13);
        var w = f.Param("w", [2, 3, 4, 5]);
        var y = f.Node("Resize", [w, "", f.ConstFloat("scales", scales, 4)], Attr.String("mode", "linear"), Attr.String("coordinate_transformation_mode", transform));
        Check(f.Output(y), requireDouble: false); // no float64 Resize kernel; linear in x, so float32 differences are accurate
    }

    [Fact]
    public void Resize_linear_1d_with_sizes()
    {
        var f = new ModelFactory(opset: 13);
        var w = f.Param("w", [2, 3, 6]);
        var y = f.Node("Resize", [w, "", "", f.Const("sizes", [2, 3, 4])], Attr.String("mode", "linear"));
        Check(f.Output(y), requireDouble: false);
    }

    [Fact]
    public void BatchNormalization_exported_in_training_mode_trains_and_evaluates_on_stock_kernels()
    {
        // torch.onnx.export(training=TRAINING) writes training_mode=1 (opset 15) with unused running-stat outputs.
        var f = new ModelFactory(opset: 15);
        var x = f.Param("w_x", [3, 4, 2], -2, 2);
        var bn = f.Editor.AddNode("BatchNormalization", [x, f.Param("w_scale", [4], 0.5, 1.5), f.Param("w_b", [4]), f.Param("running_mean", [4], -0.5, 0.5), f.Param("running_var", [4], 0.5, 1.5)],
            ["bn_y", "bn_rm", "bn_rv"], Attr.Int("training_mode", 1), Attr.Float("momentum", 0.9f));
        var model = f.Output(f.Node("Mul", [bn.Output[0], f.Node("Tanh", [bn.Output[0]])]));
        Check(model, requireDouble: true);
        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection { Trainable = ["w*"] }, new LossSpec { Kind = LossKind.Mse }, gradientAccumulation: false);
        foreach (var g in new[] { graphs.Training, graphs.Eval })
            Assert.All(g.Graph.Node.Where(n => n.OpType == "BatchNormalization"), n => Assert.Null(n.Attribute.FirstOrDefault(a => a.Name == "training_mode")));
    }
}
