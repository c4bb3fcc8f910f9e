using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.GradientChecking;
using Xunit.Abstractions;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests;

/// <summary>A MobileNetV2-style block end to end: check, artifacts, train steps with BatchNorm state, checkpoint, export.</summary>
public sealed class CnnTrainingTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxtune-cnn-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>Conv(3→8, 3x3, stride 2, pad 1) → BN → ReLU6 (Clip) → depthwise Conv 3x3 → BN → GlobalAveragePool → Flatten → Gemm(8→4).</summary>
    internal static global::Onnx.ModelProto SmallCnn(int seed = 5)
    {
        var f = new ModelFactory(opset: 17, seed: seed);
        var x = f.Input("image", DataType.Float, "batch", 3L, 8L, 8L);
        var c1 = f.Node("Conv", [x, f.Param("conv1.weight", [8, 3, 3, 3], -0.5, 0.5), f.Param("conv1.bias", [8], -0.1, 0.1)],
            Attr.Ints("kernel_shape", 3, 3), Attr.Ints("strides", 2, 2), Attr.Ints("pads", 1, 1, 1, 1));
        var b1 = f.Node("BatchNormalization", [c1, f.Param("bn1.weight", [8], 0.8, 1.2), f.Param("bn1.bias", [8], -0.1, 0.1),
            f.Param("bn1.running_mean", [8], -0.2, 0.2), f.Param("bn1.running_var", [8], 0.8, 1.2)], Attr.Float("epsilon", 1e-5f), Attr.Float("momentum", 0.9f));
        var r1 = f.Node("Clip", [b1, f.ConstFloat("relu6_min", [0f]), f.ConstFloat("relu6_max", [6f])]);
        var c2 = f.Node("Conv", [r1, f.Param("dw.weight", [8, 1, 3, 3], -0.5, 0.5)], Attr.Int("group", 8), Attr.Ints("pads", 1, 1, 1, 1));
        var b2 = f.Node("BatchNormalization", [c2, f.Param("bn2.weight", [8], 0.8, 1.2), f.Param("bn2.bias", [8], -0.1, 0.1),
            f.Param("bn2.running_mean", [8], -0.2, 0.2), f.Param("bn2.running_var", [8], 0.8, 1.2)], Attr.Float("epsilon", 1e-5f), Attr.Float("momentum", 0.9f));
        var pooled = f.Node("Flatten", [f.Node("GlobalAveragePool", [b2])], Attr.Int("axis", 1));
        var logits = f.Node("Gemm", [pooled, f.Param("fc.weight", [4, 8], -0.5, 0.5), f.Param("fc.bias", [4], -0.1, 0.1)], Attr.Int("transB", 1));
        return f.Output(logits, "batch", 4L);
    }

    private static float[] Images(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * 3 * 64).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    [Fact]
    public void Onnxtune_check_defaults_pass_on_the_small_cnn()
    {
        // What 'onnxtune check model.onnx --dim batch=4' runs: every float initializer, sum(output * R), seed 0.
        var model = SmallCnn();
        if (Environment.GetEnvironmentVariable("ONNXTUNE_SAVE_SMALL_CNN") is { Length: > 0 } path) OnnxModelWriter.Save(model, path); // for running the CLI by hand
        var report = GradientChecker.Check(model, new GradientCheckOptions { DimValues = new Dictionary<string, long> { ["batch"] = 4 } });
        foreach (var p in report.Parameters) output.WriteLine($"{p.Name}: rel {p.MaxRelativeError:E2} abs {p.MaxAbsoluteError:E2} {(p.Passed ? "ok" : "FAIL")}");
        Assert.True(report.Passed);
        Assert.True(report.DoublePrecision, "Conv, ConvTranspose and GlobalAveragePool run through their float64 emulations");
        Assert.DoesNotContain(report.Parameters, p => p.Name.Contains("running", StringComparison.Ordinal));
        Assert.Equal(11, report.Parameters.Count); // 9 weights + the Clip bounds (float initializers, as 'check' takes them)
    }

    [Fact]
    public void Check_passes_on_a_resnet_basic_block_in_float64()
    {
        // Conv → BN → Relu → MaxPool(3, stride 2, pad 1) → [Conv → BN → Relu → Conv → BN] + identity → Relu → GAP → Flatten → Gemm
        var f = new ModelFactory(opset: 17, seed: 9);
        var x = f.Input("image", DataType.Float, "batch", 3L, 10L, 10L);
        string Bn(string input, string name, long c) => f.Node("BatchNormalization", [input, f.Param(name + ".weight", [c], 0.8, 1.2), f.Param(name + ".bias", [c], -0.1, 0.1),
            f.Param(name + ".running_mean", [c], -0.2, 0.2), f.Param(name + ".running_var", [c], 0.8, 1.2)]);
        string Conv(string input, string name, long cin, long cout, long stride) => f.Node("Conv", [input, f.Param(name, [cout, cin, 3, 3], -0.4, 0.4)],
            Attr.Ints("strides", stride, stride), Attr.Ints("pads", 1, 1, 1, 1));
        var stem = f.Node("Relu", [Bn(Conv(x, "conv1.weight", 3, 4, 2), "bn1", 4)]);
        var pooled = f.Node("MaxPool", [stem], Attr.Ints("kernel_shape", 3, 3), Attr.Ints("strides", 2, 2), Attr.Ints("pads", 1, 1, 1, 1));
        var branch = Bn(Conv(f.Node("Relu", [Bn(Conv(pooled, "layer1.conv1.weight", 4, 4, 1), "layer1.bn1", 4)]), "layer1.conv2.weight", 4, 4, 1), "layer1.bn2", 4);
        var block = f.Node("Relu", [f.Node("Add", [branch, pooled])]);
        var logits = f.Node("Gemm", [f.Node("Flatten", [f.Node("GlobalAveragePool", [block])]), f.Param("fc.weight", [3, 4], -0.5, 0.5), f.Param("fc.bias", [3])], Attr.Int("transB", 1));
        var report = GradientChecker.Check(f.Output(logits, "batch", 3L), new GradientCheckOptions { DimValues = new Dictionary<string, long> { ["batch"] = 3 } });
        foreach (var p in report.Parameters) output.WriteLine($"{p.Name}: rel {p.MaxRelativeError:E2} {(p.Passed ? "ok" : "FAIL")}");
        Assert.True(report.Passed);
        Assert.True(report.DoublePrecision);
    }

    [Fact]
    public void Train_steps_update_running_statistics_as_pytorch_and_checkpoint_and_export_carry_them()
    {
        var model = SmallCnn();
        var art = Path.Combine(_dir, "art");
        var artifacts = ArtifactGenerator.Generate(model, new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.1, Momentum = 0.9 },
        }, art);
        Assert.Equal(["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"], artifacts.Manifest.NonTrainableState.Select(s => s.Name));
        Assert.DoesNotContain(artifacts.Manifest.TrainableParameters, p => p.Name.Contains("running", StringComparison.Ordinal));
        Assert.DoesNotContain(artifacts.Manifest.FrozenParameters, p => p.Name.Contains("running", StringComparison.Ordinal));
        // ReLU6's bounds are constants under the default selection.
        Assert.DoesNotContain(artifacts.Manifest.TrainableParameters, p => p.Name.StartsWith("relu6", StringComparison.Ordinal));
        Assert.Equal(9, artifacts.Manifest.TrainableParameters.Count);

        var images = Images(6, 1);
        var labels = new long[] { 0, 1, 2, 3, 1, 2 };
        TrainingBatch Batch() => new TrainingBatch().Add("image", images.AsMemory(), 6, 3, 8, 8).WithLabels(labels.AsMemory(), 6);

        // The reference: bn1's input (conv1's output) from the source model, its batch mean and unbiased variance.
        var probe = model.Clone();
        var conv1Out = probe.Graph.Node.First(n => n.OpType == "Conv").Output[0];
        probe.Graph.Output.Add(ValueInfos.Tensor(conv1Out, DataType.Float, null));
        float[] conv1;
        using (var s = new InferenceSession(OnnxModelWriter.ToBytes(probe)))
        using (var x = OrtValue.CreateTensorValueFromMemory(images, [6, 3, 8, 8]))
        using (var ro = new RunOptions())
        using (var outs = s.Run(ro, new Dictionary<string, OrtValue> { ["image"] = x }, [conv1Out]))
            conv1 = outs[0].GetTensorDataAsSpan<float>().ToArray(); // [6, 8, 4, 4]
        var initMean = Onnx.Tensors.TensorProtos.ToFloatArray(model.Graph.Initializer.First(t => t.Name == "bn1.running_mean"));
        var initVar = Onnx.Tensors.TensorProtos.ToFloatArray(model.Graph.Initializer.First(t => t.Name == "bn1.running_var"));

        float[] mean1, var1;
        using (var session = TrainingEngine.Open(art))
        {
            Assert.Equal(4, session.NonTrainableStateNames.Count);
            Assert.Equal(initMean, session.GetNonTrainableState("bn1.running_mean"));
            session.TrainStep(Batch());
            mean1 = session.GetNonTrainableState("bn1.running_mean");
            var1 = session.GetNonTrainableState("bn1.running_var");
            double worst = 0;
            for (var c = 0; c < 8; c++)
            {
                var v = Enumerable.Range(0, 6).SelectMany(n => Enumerable.Range(0, 16).Select(i => (double)conv1[(n * 8 + c) * 16 + i])).ToArray();
                var m = v.Average();
                var unbiased = v.Sum(a => (a - m) * (a - m)) / (v.Length - 1);
                worst = Math.Max(worst, Math.Abs(mean1[c] - (0.9 * initMean[c] + 0.1 * m)));
                worst = Math.Max(worst, Math.Abs(var1[c] - (0.9 * initVar[c] + 0.1 * unbiased)));
            }
            output.WriteLine($"running statistics after one step: max |diff| vs reference {worst:E2}");
            Assert.True(worst < 1e-5, $"running statistics differ by {worst}");

            // Every train step updates them (as every PyTorch forward in train mode does), accumulation or not.
            session.OptimizerStep();
            var loss1 = session.TrainStep(Batch());
            session.OptimizerStep();
            var loss2 = session.TrainStep(Batch());
            session.OptimizerStep();
            output.WriteLine($"losses {loss1:F4} {loss2:F4}");
            Assert.NotEqual(mean1, session.GetNonTrainableState("bn1.running_mean"));

            // Eval uses the running statistics: the exported model gives the same logits.
            var eval = session.EvalStep(Batch()).Outputs[model.Graph.Output[0].Name].AsFloats();
            var exported = Path.Combine(_dir, "exported.onnx");
            session.ExportInferenceModel(exported);
            var exportedModel = OnnxModelReader.Load(exported);
            foreach (var name in session.NonTrainableStateNames)
                Assert.Equal(session.GetNonTrainableState(name), Onnx.Tensors.TensorProtos.ToFloatArray(exportedModel.Graph.Initializer.First(t => t.Name == name)));
            using (var s = new InferenceSession(exported))
            using (var x = OrtValue.CreateTensorValueFromMemory(images, [6, 3, 8, 8]))
            using (var ro = new RunOptions())
            using (var outs = s.Run(ro, new Dictionary<string, OrtValue> { ["image"] = x }, [model.Graph.Output[0].Name]))
            {
                var logits = outs[0].GetTensorDataAsSpan<float>().ToArray();
                for (var i = 0; i < logits.Length; i++) Assert.Equal(logits[i], eval[i], 5);
            }

            var ckpt = Path.Combine(_dir, "ckpt");
            session.SaveCheckpoint(ckpt);
            var saved = session.NonTrainableStateNames.ToDictionary(n => n, session.GetNonTrainableState);
            using var reopened = TrainingEngine.Open(art, new TrainingEngineOptions { CheckpointDirectory = ckpt });
            foreach (var (name, values) in saved) Assert.Equal(values, reopened.GetNonTrainableState(name));
        }
    }

    [Fact]
    public void Frozen_batchnorm_layer_keeps_its_running_statistics()
    {
        var model = SmallCnn();
        var art = Path.Combine(_dir, "frozen");
        var artifacts = ArtifactGenerator.Generate(model, new ArtifactOptions
        {
            Selection = new ParameterSelection { Frozen = ["conv1.*", "bn1.*"] },
            Loss = new LossSpec { Kind = LossKind.CrossEntropy },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 0.01 },
        }, art);
        Assert.Equal(["bn2.running_mean", "bn2.running_var"], artifacts.Manifest.NonTrainableState.Select(s => s.Name));
        using var session = TrainingEngine.Open(art);
        var images = Images(4, 2);
        var before = session.GetNonTrainableState("bn2.running_mean");
        session.TrainStep(new TrainingBatch().Add("image", images.AsMemory(), 4, 3, 8, 8).WithLabels(new long[] { 0, 1, 2, 3 }.AsMemory(), 4));
        session.OptimizerStep();
        Assert.NotEqual(before, session.GetNonTrainableState("bn2.running_mean"));
        var exported = Path.Combine(_dir, "frozen.onnx");
        session.ExportInferenceModel(exported);
        var m = OnnxModelReader.Load(exported);
        foreach (var name in new[] { "bn1.running_mean", "bn1.running_var" })
            Assert.Equal(Onnx.Tensors.TensorProtos.ToFloatArray(model.Graph.Initializer.First(t => t.Name == name)), Onnx.Tensors.TensorProtos.ToFloatArray(m.Graph.Initializer.First(t => t.Name == name)));
    }
}
