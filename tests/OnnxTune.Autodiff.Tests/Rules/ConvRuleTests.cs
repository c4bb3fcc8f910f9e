using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Training.GradientChecking;
using Xunit.Abstractions;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class ConvRuleTests(ITestOutputHelper output)
{
    private static GradientCheckOptions Options(int batch = 2) => new()
    {
        Selection = new ParameterSelection { Trainable = ["w*"] },
        DimValues = new Dictionary<string, long> { ["batch"] = batch },
        MaxElementsPerParameter = 40,
    };

    private GradientCheckReport Check(global::Onnx.ModelProto model, GradientCheckOptions? options = null, bool requireDouble = true)
    {
        var report = GradientAssert.Passes(model, options ?? Options(), requireDouble);
        output.WriteLine($"{(report.DoublePrecision ? "float64" : "float32")}: " + string.Join(", ", report.Parameters.Select(p => $"{p.Name} rel {p.MaxRelativeError:E1}")));
        return report;
    }

    // The input goes through a trainable elementwise scale so the check covers dX as well as dW and dB.
    public static TheoryData<string, int, long[], long[], string, long[], long, bool> Cases => new()
    {
        // (ORT runs no SAME auto_pad with dilations.) name, spatial dims, strides, pads, auto_pad, dilations, group, bias
        { "1d_plain", 1, [1], [0, 0], "NOTSET", [1], 1, true },
        { "1d_stride2_pads", 1, [2], [1, 2], "NOTSET", [1], 1, false },
        { "1d_same_upper_stride2", 1, [2], [], "SAME_UPPER", [1], 1, true },
        { "1d_dilated_stride2", 1, [2], [2, 1], "NOTSET", [2], 1, true },
        { "2d_plain_bias", 2, [1, 1], [0, 0, 0, 0], "NOTSET", [1, 1], 1, true },
        { "2d_stride2_pads", 2, [2, 2], [1, 1, 1, 1], "NOTSET", [1, 1], 1, true },
        { "2d_asym_stride_pads", 2, [2, 3], [0, 1, 2, 0], "NOTSET", [1, 1], 1, false },
        { "2d_dilated", 2, [1, 2], [2, 1, 0, 2], "NOTSET", [2, 1], 1, true },
        { "2d_same_upper_stride2", 2, [2, 2], [], "SAME_UPPER", [1, 1], 1, true },
        { "2d_same_lower_stride2", 2, [2, 1], [], "SAME_LOWER", [1, 1], 1, true },
        { "2d_valid_stride2", 2, [2, 2], [], "VALID", [1, 1], 1, false },
        { "2d_group2", 2, [1, 1], [1, 1, 1, 1], "NOTSET", [1, 1], 2, true },
        { "2d_depthwise_stride2", 2, [2, 2], [1, 1, 1, 1], "NOTSET", [1, 1], 4, true },
        { "2d_depthwise_same_upper", 2, [1, 1], [], "SAME_UPPER", [1, 1], 4, false },
        { "2d_depthwise_dilated_pads", 2, [1, 2], [2, 1, 2, 1], "NOTSET", [2, 2], 4, true },
        { "2d_group2_same_lower_stride2", 2, [2, 2], [], "SAME_LOWER", [1, 1], 2, false },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Conv(string name, int spatial, long[] strides, long[] pads, string autoPad, long[] dilations, long group, bool bias)
    {
        _ = name;
        const long c = 4;
        var m = group == 4 ? 8L : 6L; // depthwise with channel multiplier 2
        var size = spatial == 1 ? new long[] { 9 } : [7, 8];
        var kernel = spatial == 1 ? new long[] { 3 } : [3, 2];
        var f = new ModelFactory(opset: 17);
        var x = f.Input("x", DataType.Float, ["batch", c, .. size.Cast<object>()]);
        var scaled = f.Node("Mul", [x, f.Param("w_in", [c, .. size.Select(_ => 1L)], 0.5, 1.5)]);
        var inputs = new List<string> { scaled, f.Param("w_conv", [m, c / group, .. kernel]) };
        if (bias) inputs.Add(f.Param("w_bias", [m]));
        var attrs = new List<global::Onnx.AttributeProto> { Attr.Ints("strides", strides), Attr.Ints("dilations", dilations), Attr.Int("group", group) };
        if (autoPad == "NOTSET") attrs.Add(Attr.Ints("pads", pads)); else attrs.Add(Attr.String("auto_pad", autoPad));
        var y = f.Node("Conv", [.. inputs], [.. attrs]);
        Check(f.Output(y));
    }

    [Fact]
    public void Conv_with_symbolic_spatial_dims_and_same_padding()
    {
        // Spatial sizes unknown to the builder: SAME pads and the crop are computed at run time.
        var f = new ModelFactory(opset: 17);
        var x = f.Input("x", DataType.Float, "batch", 3L, "h", "w");
        var scaled = f.Node("Mul", [x, f.Param("w_in", [3, 1, 1], 0.5, 1.5)]);
        var y = f.Node("Conv", [scaled, f.Param("w_conv", [4, 3, 3, 3]), f.Param("w_bias", [4])],
            Attr.Ints("strides", 2, 2), Attr.String("auto_pad", "SAME_LOWER"));
        // The weight gradient's kernel (dY's extent) is unknown statically, so the float64 emulation cannot run: float32.
        Check(f.Output(y), Options() with { DimValues = new Dictionary<string, long> { ["batch"] = 2, ["h"] = 6, ["w"] = 5 } }, requireDouble: false);
    }

    public static TheoryData<string, int, long[], long[], long[], long[], long, bool> TransposeCases => new()
    {
        // name, spatial dims, strides, pads, output_padding, dilations, group, bias
        { "1d_plain", 1, [1], [0, 0], [0], [1], 1, true },
        { "1d_stride2_pads_outpad", 1, [2], [1, 0], [1], [1], 1, false },
        { "2d_stride2_pads", 2, [2, 2], [1, 1, 1, 1], [0, 0], [1, 1], 1, true },
        { "2d_stride_outpad_dilated", 2, [2, 3], [0, 1, 1, 0], [1, 2], [2, 1], 1, true },
        { "2d_group2_stride2", 2, [2, 2], [1, 0, 0, 1], [1, 0], [1, 1], 2, true },
        { "2d_depthwise", 2, [2, 1], [0, 0, 0, 0], [0, 0], [1, 1], 4, false },
    };

    [Theory]
    [MemberData(nameof(TransposeCases))]
    public void ConvTranspose(string name, int spatial, long[] strides, long[] pads, long[] outputPadding, long[] dilations, long group, bool bias)
    {
        _ = name;
        const long c = 4;
        var mg = 3L; // output channels per group
        var size = spatial == 1 ? new long[] { 5 } : [4, 3];
        var kernel = spatial == 1 ? new long[] { 3 } : [3, 2];
        var f = new ModelFactory(opset: 17);
        var x = f.Input("x", DataType.Float, ["batch", c, .. size.Cast<object>()]);
        var scaled = f.Node("Mul", [x, f.Param("w_in", [c, .. size.Select(_ => 1L)], 0.5, 1.5)]);
        var inputs = new List<string> { scaled, f.Param("w_convt", [c, mg, .. kernel]) };
        if (bias) inputs.Add(f.Param("w_bias", [mg * group]));
        var y = f.Node("ConvTranspose", [.. inputs], Attr.Ints("strides", strides), Attr.Ints("pads", pads), Attr.Ints("output_padding", outputPadding),
            Attr.Ints("dilations", dilations), Attr.Int("group", group));
        Check(f.Output(y));
    }
}
