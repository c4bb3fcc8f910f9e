using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Tests;
using OnnxTune.Onnx.Graph;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Hosting.Images.Tests;

/// <summary>
/// A small CNN for 8×8 grayscale digits, built in code: Conv(1→16, 3×3, pad 1) → ReLU → MaxPool 2 → Conv(16→32, 3×3,
/// pad 1) → ReLU → MaxPool 2 → Flatten (128) → Gemm(128→10); uniform init with PyTorch's bound 1/√fan_in.
/// </summary>
internal static class DigitCnn
{
    public const string Input = "image";
    public const string Output = "logits";
    public static readonly string[] Labels = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    public static global::Onnx.ModelProto Model(int seed = 7, long channels = 1, object? height = null, object? width = null)
    {
        var f = new ModelFactory(opset: 17, seed: seed);
        var x = f.Input(Input, DataType.Float, "batch", channels, height ?? 8L, width ?? 8L);
        double B(double fanIn) => 1 / Math.Sqrt(fanIn);
        var c1 = f.Node("Conv", [x, f.Param("conv1.weight", [16, channels, 3, 3], -B(9 * channels), B(9 * channels)), f.Param("conv1.bias", [16], -B(9 * channels), B(9 * channels))],
            Attr.Ints("kernel_shape", 3, 3), Attr.Ints("pads", 1, 1, 1, 1));
        var p1 = f.Node("MaxPool", [f.Node("Relu", [c1])], Attr.Ints("kernel_shape", 2, 2), Attr.Ints("strides", 2, 2));
        var c2 = f.Node("Conv", [p1, f.Param("conv2.weight", [32, 16, 3, 3], -B(144), B(144)), f.Param("conv2.bias", [32], -B(144), B(144))],
            Attr.Ints("kernel_shape", 3, 3), Attr.Ints("pads", 1, 1, 1, 1));
        var p2 = f.Node("MaxPool", [f.Node("Relu", [c2])], Attr.Ints("kernel_shape", 2, 2), Attr.Ints("strides", 2, 2));
        var flat = f.Node("Flatten", [p2], Attr.Int("axis", 1));
        var logits = f.Node("Gemm", [flat, f.Param("head.weight", [10, 128], -B(128), B(128)), f.Param("head.bias", [10], -B(128), B(128))], Attr.Int("transB", 1));
        f.Editor.AddNode("Identity", [logits], [Output]);
        return f.Output(Output, "batch", 10L);
    }

    /// <summary>Training artifacts (cross-entropy on <c>logits</c>, AdamW) written to <paramref name="dir"/>.</summary>
    public static string WriteArtifacts(string dir, global::Onnx.ModelProto? model = null)
    {
        var artifacts = ArtifactBuilder.Build(model ?? Model(), new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = Output },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW },
        });
        ArtifactBuilder.Save(artifacts, dir);
        return dir;
    }
}

internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "onnxtune-images-" + Guid.NewGuid().ToString("N"));

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
