using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Training.GradientChecking;
using Xunit.Abstractions;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class PoolingRuleTests(ITestOutputHelper output)
{
    private static GradientCheckOptions Options(int batch = 2) => new()
    {
        Selection = new ParameterSelection { Trainable = ["w*"] },
        DimValues = new Dictionary<string, long> { ["batch"] = batch },
        MaxElementsPerParameter = 60,
    };

    private GradientCheckReport Check(global::Onnx.ModelProto model, bool requireDouble = false, GradientCheckOptions? options = null)
    {
        var report = GradientAssert.Passes(model, options ?? Options(), requireDouble);
        output.WriteLine($"{(report.DoublePrecision ? "float64" : "float32")}: " + string.Join(", ", report.Parameters.Select(p => $"{p.Name} rel {p.MaxRelativeError:E1}")));
        return report;
    }

    // A trainable input tensor (no data input) of [2, 3, *spatial] with distinct values, so max positions are unique.
    private static (ModelFactory F, string X) Tensor(params long[] spatial)
    {
        var f = new ModelFactory(opset: 17, seed: 3);
        return (f, f.Param("w_x", [2, 3, .. spatial], -2, 2));
    }

    public static TheoryData<string, long[], long[], long[], long, long[]> MaxCases => new()
    {
        // name, kernel, strides, pads, ceil_mode, dilations
        { "1d", [3], [2], [0, 0], 0, [1] },
        { "1d_ceil_pads", [2], [2], [1, 0], 1, [1] },
        { "2d_plain", [2, 2], [2, 2], [0, 0, 0, 0], 0, [1, 1] },
        { "2d_overlap_pads", [3, 3], [2, 2], [1, 1, 1, 1], 0, [1, 1] },
        { "2d_ceil", [3, 2], [2, 2], [0, 0, 0, 0], 1, [1, 1] },
        { "2d_ceil_asym_pads", [2, 3], [2, 1], [1, 0, 0, 1], 1, [1, 1] },
        { "2d_dilated", [2, 2], [1, 1], [0, 0, 0, 0], 0, [2, 2] },
    };

    [Theory]
    [MemberData(nameof(MaxCases))]
    public void MaxPool(string name, long[] kernel, long[] strides, long[] pads, long ceil, long[] dilations)
    {
        _ = name;
        var (f, x) = Tensor(kernel.Length == 1 ? [9] : [7, 6]);
        var y = f.Node("MaxPool", [x], Attr.Ints("kernel_shape", kernel), Attr.Ints("strides", strides), Attr.Ints("pads", pads),
            Attr.Int("ceil_mode", ceil), Attr.Ints("dilations", dilations));
        Check(f.Output(y), requireDouble: true);
    }

    [Fact]
    public void MaxPool_same_upper()
    {
        var (f, x) = Tensor(7, 6);
        Check(f.Output(f.Node("MaxPool", [x], Attr.Ints("kernel_shape", 3, 3), Attr.Ints("strides", 2, 2), Attr.String("auto_pad", "SAME_UPPER"))), requireDouble: true);
    }

    public static TheoryData<string, long[], long[], long[], long, long, string> AverageCases => new()
    {
        // name, kernel, strides, pads, ceil_mode, count_include_pad, auto_pad
        { "1d_plain", [3], [2], [0, 0], 0, 0, "NOTSET" },
        { "1d_pads_exclude", [3], [2], [1, 1], 0, 0, "NOTSET" },
        { "1d_pads_include", [3], [2], [1, 1], 0, 1, "NOTSET" },
        { "2d_plain", [2, 2], [2, 2], [0, 0, 0, 0], 0, 0, "NOTSET" },
        { "2d_pads_exclude", [3, 3], [2, 2], [1, 1, 1, 1], 0, 0, "NOTSET" },
        { "2d_pads_include", [3, 3], [2, 2], [1, 1, 1, 1], 0, 1, "NOTSET" },
        { "2d_ceil_exclude", [3, 2], [2, 2], [0, 0, 0, 0], 1, 0, "NOTSET" },
        { "2d_ceil_include_pads", [3, 3], [2, 2], [1, 0, 1, 0], 1, 1, "NOTSET" },
        { "2d_same_upper_exclude", [3, 3], [2, 2], [], 0, 0, "SAME_UPPER" },
        { "2d_same_lower_include", [3, 2], [2, 1], [], 0, 1, "SAME_LOWER" },
        { "2d_overlap_stride1", [3, 3], [1, 1], [1, 1, 1, 1], 0, 0, "NOTSET" },
    };

    [Theory]
    [MemberData(nameof(AverageCases))]
    public void AveragePool(string name, long[] kernel, long[] strides, long[] pads, long ceil, long includePad, string autoPad)
    {
        _ = name;
        var (f, x) = Tensor(kernel.Length == 1 ? [9] : [7, 6]);
        var attrs = new List<global::Onnx.AttributeProto>
        {
            Attr.Ints("kernel_shape", kernel), Attr.Ints("strides", strides), Attr.Int("ceil_mode", ceil), Attr.Int("count_include_pad", includePad),
        };
        attrs.Add(autoPad == "NOTSET" ? Attr.Ints("pads", pads) : Attr.String("auto_pad", autoPad));
        Check(f.Output(f.Node("AveragePool", [x], [.. attrs])));
    }

    [Fact]
    public void AveragePool_with_symbolic_spatial_dims()
    {
        var f = new ModelFactory(opset: 17);
        var x = f.Input("x", DataType.Float, "batch", 2L, "h", "w");
        var scaled = f.Node("Mul", [x, f.Param("w_in", [2, 1, 1], 0.5, 1.5)]);
        var y = f.Node("AveragePool", [scaled], Attr.Ints("kernel_shape", 3, 3), Attr.Ints("strides", 2, 2), Attr.Ints("pads", 1, 1, 1, 1), Attr.Int("ceil_mode", 1));
        Check(f.Output(y), options: Options() with { DimValues = new Dictionary<string, long> { ["batch"] = 2, ["h"] = 6, ["w"] = 5 } });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void GlobalAveragePool_and_GlobalMaxPool(int spatial)
    {
        var (f, x) = Tensor(spatial == 1 ? [5] : [4, 3]);
        var y = f.Node("Add", [f.Node("GlobalAveragePool", [x]), f.Node("GlobalMaxPool", [x])]);
        Check(f.Output(y));
    }

    [Fact]
    public void GlobalMaxPool_ties_share_the_gradient()
    {
        // Max(w, w) as a plane: every position ties with its copy (finite differences see the sum of both).
        var (f, x) = Tensor(4, 3);
        Check(f.Output(f.Node("GlobalMaxPool", [f.Node("Concat", [x, x], Attr.Int("axis", 2))])));
    }
}
