using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class DropoutRuleTests
{
    private const int Rows = 6, Cols = 40;

    // loss = sum(Dropout(x * w) * r): dL/dw = x * r * mask / (1 - p).
    private static (global::Onnx.ModelProto Model, float[] X, float[] W, float[] R) Build(float ratio, bool exposeMask, string? trainingMode)
    {
        var f = new ModelFactory(opset: 17, seed: 3);
        var x = f.Input("x", DataType.Float, (long)Rows, (long)Cols);
        var w = f.Param("w", [Rows, Cols]);
        var rng = new Random(5);
        var rValues = Enumerable.Range(0, Rows * Cols).Select(_ => (float)rng.NextDouble() + 0.5f).ToArray();
        var r = f.ConstFloat("r", rValues, Rows, Cols);
        var ratioName = f.ConstFloat("ratio", [ratio]);
        string mode;
        if (trainingMode is null)
            mode = f.Editor.AddInitializer(OnnxTune.Onnx.Tensors.TensorProtos.Bool("training_mode", [true]), makeUnique: false);
        else
            mode = f.Input(trainingMode, DataType.Bool);
        var h = f.Node("Mul", [x, w]);
        var outputs = exposeMask ? new[] { "dropped", "mask" } : ["dropped"];
        f.Editor.AddNode("Dropout", [h, ratioName, mode], outputs);
        var loss = f.Node("ReduceSum", [f.Node("Mul", ["dropped", r])], Attr.Int("keepdims", 0));
        var model = f.Output(loss);
        var xValues = Enumerable.Range(0, Rows * Cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var wValues = OnnxTune.Onnx.Tensors.TensorProtos.ToFloatArray(model.Graph.Initializer.First(t => t.Name == w));
        return (model, xValues, wValues, rValues);
    }

    private static (float[] Grad, bool[] Mask) RunTraining(global::Onnx.ModelProto model, float[] x, float[] w, bool? trainingModeFeed)
    {
        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection { Trainable = ["w"] },
            new LossSpec { Kind = LossKind.None, OutputName = model.Graph.Output[0].Name, LabelName = null }, gradientAccumulation: false);
        var training = graphs.Training;
        var dropout = training.Graph.Node.Single(n => n.OpType == "Dropout");
        Assert.True(dropout.Output.Count == 2 && dropout.Output[1].Length > 0, "the gradient rule must expose the dropout mask");
        training.Graph.Output.Add(ValueInfos.Tensor(dropout.Output[1], DataType.Bool, (long)Rows, (long)Cols));
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(training));
        var names = new List<string> { "x", "w" };
        var values = new List<OrtValue> { OrtValue.CreateTensorValueFromMemory(x, [Rows, Cols]), OrtValue.CreateTensorValueFromMemory(w, [Rows, Cols]) };
        if (trainingModeFeed is { } tm) { names.Add("mode"); values.Add(OrtValue.CreateTensorValueFromMemory(new[] { tm }, [])); }
        try
        {
            using var results = session.Run(new RunOptions(), names, values, [graphs.GradientOutputs[0], dropout.Output[1]]);
            return (results[0].GetTensorDataAsSpan<float>().ToArray(), results[1].GetTensorDataAsSpan<bool>().ToArray());
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Training_mode_gradient_uses_the_forward_mask(bool exposeMask)
    {
        const float p = 0.3f;
        var (model, x, w, r) = Build(p, exposeMask, null);
        var (grad, mask) = RunTraining(model, x, w, null);
        var dropped = mask.Count(m => !m);
        Assert.InRange(dropped, 20, 130); // ~72 of 240: the mask really is random, not all ones
        for (var i = 0; i < grad.Length; i++)
        {
            var expected = mask[i] ? x[i] * r[i] / (1 - p) : 0f;
            Assert.True(Math.Abs(grad[i] - expected) <= 1e-5f * Math.Max(1, Math.Abs(expected)), $"element {i}: {grad[i]} vs {expected}");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Runtime_training_mode_input_switches_between_mask_and_identity(bool training)
    {
        const float p = 0.5f;
        var (model, x, w, r) = Build(p, exposeMask: true, trainingMode: "mode");
        var (grad, mask) = RunTraining(model, x, w, training);
        for (var i = 0; i < grad.Length; i++)
        {
            var expected = training ? (mask[i] ? x[i] * r[i] / (1 - p) : 0f) : x[i] * r[i];
            Assert.True(Math.Abs(grad[i] - expected) <= 1e-5f * Math.Max(1, Math.Abs(expected)), $"element {i}: {grad[i]} vs {expected}");
        }
        if (training) Assert.Contains(false, mask);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Training_mode_with_ratio_zero_passes_the_gradient_check(bool exposeMask)
    {
        var (model, _, _, _) = Build(0f, exposeMask, null);
        GradientAssert.Passes(model, new GradientCheckOptions { Selection = new ParameterSelection { Trainable = ["w"] } }, requireDouble: false);
    }

    [Fact]
    public void Inference_mode_is_identity()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4]);
        var y = f.Node("Dropout", [w, f.ConstFloat("ratio", [0.5f])]);
        GradientAssert.Passes(f.Output(f.Node("Mul", [y, y])));
    }
}
