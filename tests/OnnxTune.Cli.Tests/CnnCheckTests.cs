using System.Text.Json;
using OnnxTune.Cli.Commands;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;

namespace OnnxTune.Cli.Tests;

/// <summary>
/// Issue 13: gradient checks on tests/fixtures/check/cnn (tests/parity/make_cnn_fixtures.py) — the modules of ONNX's
/// pytorch-converted backend tests (Conv*, ConvTranspose2d*, BatchNorm*_eval, AvgPool*, MaxPool*) re-exported at
/// opset 14, and small torchvision MobileNetV2, ResNet-18 and EfficientNet-B0 exports.
/// </summary>
public sealed class CnnCheckTests
{
    private static readonly string Folder = Path.Combine(Repo.Fixtures, "check", "cnn");

    private static List<JsonElement> Manifest()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "manifest.json")));
        return doc.RootElement.EnumerateArray().Select(e => e.Clone()).ToList();
    }

    public static TheoryData<string> PytorchConverted =>
        new(Manifest().Select(e => e.GetProperty("file").GetString()!).Where(f => f.StartsWith("pytorch_converted/", StringComparison.Ordinal)));

    public static TheoryData<string> Torchvision =>
        new(Manifest().Select(e => e.GetProperty("file").GetString()!).Where(f => f.StartsWith("torchvision/", StringComparison.Ordinal)));

    [Fact]
    public void The_fixture_set_covers_the_issue_models()
    {
        var files = Manifest().Select(e => e.GetProperty("file").GetString()!).ToList();
        foreach (var name in new[] { "Conv2d", "Conv1d_stride", "Conv2d_depthwise", "BatchNorm2d_eval", "Conv3d", "ConvTranspose2d", "AvgPool2d", "MaxPool1d" })
            Assert.Contains($"pytorch_converted/{name}.onnx", files);
        foreach (var name in new[] { "mobilenet_v2", "resnet18", "efficientnet_b0" })
            Assert.Contains($"torchvision/{name}_small.onnx", files);
    }

    [Theory]
    [MemberData(nameof(PytorchConverted))]
    public void Pytorch_converted_model_passes_check(string file)
    {
        var model = OnnxModelReader.Load(Path.Combine(Folder, file));
        var hasParameters = model.Graph.Initializer.Any(t => t.DataType == (int)global::Onnx.TensorProto.Types.DataType.Float);
        if (hasParameters)
        {
            var run = CliRunner.Run(Folder, "check", file).Expect(CheckCommand.Passed);
            Assert.Contains("parameters pass", run.Out, StringComparison.Ordinal);
            Assert.Contains("float64", run.Out, StringComparison.Ordinal);
        }

        // The input gradient too (pools have no parameters): x becomes an initializer, so the check differentiates it.
        var x = model.Graph.Input.Single(i => i.Name == "x");
        var shape = x.Type.TensorType.Shape.Dim.Select(d => d.DimValue).ToArray();
        var rng = new Random(13);
        var values = Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        model.Graph.Input.Remove(x);
        model.Graph.Initializer.Add(TensorProtos.Float("x", values, shape));
        var report = GradientChecker.Check(model, new GradientCheckOptions { Seed = 1 });
        Assert.True(report.DoublePrecision, $"{file}: expected a float64 check");
        Assert.True(report.Passed, $"{file}:\n" + string.Join("\n", report.Parameters.Select(p => $"  {p.Name}: {p.MaxRelativeError:E2} {(p.Passed ? "ok" : "FAIL")}")));
        Assert.Contains(report.Parameters, p => p.Name == "x");
    }

    // Minutes, not seconds (2026-12-02 on a loaded 2-core machine, 2 sampled elements per tensor, batch 8: ResNet-18
    // 11 s, MobileNetV2 1.2 min, EfficientNet-B0 1.7 min), so it runs only with ONNXTUNE_LONG_CHECKS=1:
    //   ONNXTUNE_LONG_CHECKS=1 dotnet test tests/OnnxTune.Cli.Tests --filter "FullyQualifiedName~Torchvision_export"
    [LongCheckTheory]
    [MemberData(nameof(Torchvision))]
    public void Torchvision_export_passes_check(string file)
    {
        var model = OnnxModelReader.Load(Path.Combine(Folder, file));
        var report = GradientChecker.Check(model, new GradientCheckOptions { MaxElementsPerParameter = 2 });
        Assert.True(report.DoublePrecision, $"{file}: expected a float64 check");
        // At 32x32 input the last stages are 1x1, so the check takes 8 samples for 8 values per BN channel (over 2
        // values, depending on the input, BN can make the loss too steep for any finite-difference step).
        Assert.Equal(8, report.DimValues["batch"]);
        Assert.True(report.Passed, $"{file}:\n" + string.Join("\n", report.Parameters.Where(p => !p.Passed).Select(p => $"  {p.Name}: {p.MaxRelativeError:E2}")));
        // Every Conv weight, BN scale/bias and Gemm weight was probed.
        var checkedNames = report.Parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var expected = model.Graph.Node.SelectMany(n => n.OpType switch
        {
            "Conv" or "Gemm" => [n.Input[1]],
            "BatchNormalization" => new[] { n.Input[1], n.Input[2] },
            _ => [],
        }).ToList();
        Assert.NotEmpty(expected);
        Assert.All(expected, name => Assert.Contains(name, checkedNames));
    }
}

/// <summary>A theory that runs only when ONNXTUNE_LONG_CHECKS=1 (whole-network gradient checks that take minutes).</summary>
public sealed class LongCheckTheoryAttribute : TheoryAttribute
{
    /// <summary>Sets <see cref="FactAttribute.Skip"/> unless ONNXTUNE_LONG_CHECKS is 1.</summary>
    public LongCheckTheoryAttribute()
    {
        if (Environment.GetEnvironmentVariable("ONNXTUNE_LONG_CHECKS") != "1")
            Skip = "Set ONNXTUNE_LONG_CHECKS=1 to run the whole-network gradient checks of the torchvision exports (minutes).";
    }
}
