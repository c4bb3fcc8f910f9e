using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Transforms;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

/// <summary>
/// ONNX Runtime's CPU AveragePool has no float64 kernel; the gradient check's float64 rewrite computes it with the
/// emulated Conv, so CNNs with AveragePool (PyTorch's AvgPool1d/2d) keep float64 tolerances.
/// </summary>
public sealed class AveragePoolDoubleTests
{
    [Theory]
    [InlineData(new long[] { 3 }, new long[] { 2 }, new long[] { 1, 1 }, 1L)]
    [InlineData(new long[] { 3 }, new long[] { 1 }, new long[] { 1, 1 }, 0L)]
    [InlineData(new long[] { 2, 3 }, new long[] { 2, 1 }, new long[] { 0, 1, 1, 2 }, 0L)]
    [InlineData(new long[] { 2, 2 }, new long[] { 2, 2 }, new long[] { 0, 0, 0, 0 }, 0L)]
    public void Float64_rewrite_matches_the_float32_kernel(long[] kernel, long[] strides, long[] pads, long includePad)
    {
        long[] shape = kernel.Length == 1 ? [2, 3, 9] : [2, 3, 7, 6];
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, [.. shape.Cast<object>()]);
        var y = f.Node("AveragePool", [x], Attr.Ints("kernel_shape", kernel), Attr.Ints("strides", strides), Attr.Ints("pads", pads), Attr.Int("count_include_pad", includePad));
        var model = f.Output(y);

        var rng = new Random(5);
        var data = Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        using var ro = new RunOptions();
        float[] f32;
        using (var s = new InferenceSession(OnnxModelWriter.ToBytes(model)))
        using (var v = OrtValue.CreateTensorValueFromMemory(data.Select(d => (float)d).ToArray(), shape))
        using (var o = s.Run(ro, new Dictionary<string, OrtValue> { ["x"] = v }, [y]))
            f32 = o[0].GetTensorDataAsSpan<float>().ToArray();

        var converted = DoublePrecisionConverter.Convert(model);
        Assert.DoesNotContain(converted.Graph.Node, n => n.OpType is "AveragePool" or "Conv");
        using var s64 = new InferenceSession(OnnxModelWriter.ToBytes(converted));
        using var v64 = OrtValue.CreateTensorValueFromMemory(data, shape);
        using var o64 = s64.Run(ro, new Dictionary<string, OrtValue> { ["x"] = v64 }, [y]);
        var f64 = o64[0].GetTensorDataAsSpan<double>().ToArray();
        Assert.Equal(f32.Length, f64.Length);
        for (var i = 0; i < f32.Length; i++) Assert.True(Math.Abs(f32[i] - f64[i]) < 1e-6, $"[{i}] float32 {f32[i]} vs float64 {f64[i]}");
    }

    [Fact]
    public void Ceil_mode_is_left_to_the_float32_fallback()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, 1L, 2L, 7L);
        var model = f.Output(f.Node("AveragePool", [x], Attr.Ints("kernel_shape", 3), Attr.Ints("strides", 2), Attr.Int("ceil_mode", 1)));
        Assert.Contains(DoublePrecisionConverter.Convert(model).Graph.Node, n => n.OpType == "AveragePool");
    }

    [Fact]
    public void Gradient_check_of_conv1d_with_both_average_pools_runs_in_float64()
    {
        var f = new ModelFactory();
        var x = f.Input("x", DataType.Float, 2L, 2L, 12L);
        var c = f.Node("Conv", [x, f.Param("w", [4, 2, 3])], Attr.Ints("strides", 2), Attr.Ints("dilations", 2), Attr.Ints("pads", 2, 2));
        var p1 = f.Node("AveragePool", [f.Node("Tanh", [c])], Attr.Ints("kernel_shape", 3), Attr.Ints("pads", 1, 1), Attr.Int("count_include_pad", 0));
        var p2 = f.Node("AveragePool", [p1], Attr.Ints("kernel_shape", 2), Attr.Ints("strides", 2), Attr.Ints("pads", 1, 0), Attr.Int("count_include_pad", 1));
        GradientAssert.Passes(f.Output(f.Node("Mul", [p2, p2])));
    }
}
