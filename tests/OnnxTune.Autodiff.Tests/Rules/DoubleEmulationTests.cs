using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Transforms;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

/// <summary>The float64 rewrites used by gradient checks compute what ONNX Runtime's float32 kernels compute.</summary>
public class DoubleEmulationTests
{
    private static void SameAsFloat32(global::Onnx.ModelProto model, long[] inputShape)
    {
        var rng = new Random(7);
        var n = (int)inputShape.Aggregate(1L, (a, b) => a * b);
        var data = Enumerable.Range(0, n).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        var outName = model.Graph.Output[0].Name;
        using var ro = new RunOptions();
        float[] f32;
        using (var s = new InferenceSession(OnnxModelWriter.ToBytes(model)))
        using (var x = OrtValue.CreateTensorValueFromMemory(data.Select(v => (float)v).ToArray(), inputShape))
        using (var o = s.Run(ro, new Dictionary<string, OrtValue> { ["x"] = x }, [outName]))
            f32 = o[0].GetTensorDataAsSpan<float>().ToArray();
        var converted = DoublePrecisionConverter.Convert(model);
        Assert.DoesNotContain(converted.Graph.Node, nd => nd.OpType is "Conv" or "ConvTranspose" or "GlobalAveragePool");
        using (var s = new InferenceSession(OnnxModelWriter.ToBytes(converted)))
        using (var x = OrtValue.CreateTensorValueFromMemory(data, inputShape))
        using (var o = s.Run(ro, new Dictionary<string, OrtValue> { ["x"] = x }, [outName]))
        {
            var f64 = o[0].GetTensorDataAsSpan<double>().ToArray();
            Assert.Equal(f32.Length, f64.Length);
            for (var i = 0; i < f32.Length; i++) Assert.True(Math.Abs(f32[i] - f64[i]) < 1e-5, $"[{i}] float32 {f32[i]} vs float64 {f64[i]}");
        }
    }

    [Theory]
    [InlineData(1, 2, 1, "NOTSET")]
    [InlineData(2, 2, 4, "NOTSET")]
    [InlineData(2, 1, 2, "SAME_UPPER")]
    [InlineData(2, 2, 1, "SAME_LOWER")]
    public void Conv_emulation(int dilation, int stride, long group, string autoPad)
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, 2L, 4L, 7L, 6L);
        var attrs = new List<global::Onnx.AttributeProto> { Attr.Ints("strides", stride, 1), Attr.Int("group", group) };
        if (autoPad == "NOTSET") { attrs.Add(Attr.Ints("pads", 1, 0, 2, 1)); attrs.Add(Attr.Ints("dilations", dilation, 1)); }
        else attrs.Add(Attr.String("auto_pad", autoPad));
        var y = f.Node("Conv", [x, f.Param("w", [8, 4 / group, 3, 2]), f.Param("b", [8])], [.. attrs]);
        var pooled = f.Node("GlobalAveragePool", [f.Node("Relu", [y])]);
        SameAsFloat32(f.Output(f.Node("Add", [y, pooled])), [2, 4, 7, 6]);
    }

    [Theory]
    [InlineData(1, 1, 0)]
    [InlineData(2, 2, 1)]
    [InlineData(3, 4, 2)]
    public void ConvTranspose_emulation(int stride, long group, int outputPadding)
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, 2L, 4L, 3L, 4L);
        var y = f.Node("ConvTranspose", [x, f.Param("w", [4, 2, 3, 2]), f.Param("b", [2 * group])], Attr.Ints("strides", stride, 2), Attr.Int("group", group),
            Attr.Ints("pads", 1, 0, 0, 1), Attr.Ints("output_padding", outputPadding, 1), Attr.Ints("dilations", 1, 2));
        SameAsFloat32(f.Output(y), [2, 4, 3, 4]);
    }
}
