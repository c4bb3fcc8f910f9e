using System.Diagnostics;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using Xunit.Abstractions;

namespace OnnxTune.Autodiff.Tests.Rules;

public class FixtureGradientTests(ITestOutputHelper output)
{
    internal static string FixturePath(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "fixtures", relative);
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException($"Fixture tests/fixtures/{relative} not found above {AppContext.BaseDirectory}.");
    }

    // misc_ops_* use LeakyRelu, which ONNX Runtime implements for float32 only: those checks run in float32.
    [Theory]
    [InlineData("embed_mean_linear.onnx", true)]
    [InlineData("misc_ops_eval.onnx", false)]
    [InlineData("helper_broadcast.onnx", true)]
    public void Check_fixture_passes(string file, bool float64)
    {
        var model = OnnxModelReader.Load(FixturePath(Path.Combine("check", file)));
        var report = GradientAssert.Passes(model, requireDouble: float64);
        foreach (var p in report.Parameters) output.WriteLine($"{p.Name}: max rel {p.MaxRelativeError:E2} ({p.ElementsChecked} elements)");
    }

    [Fact]
    public void Opset_11_fixture_is_upgraded_and_passes()
    {
        // A torch opset-11 export: upgraded to opset 13 before the check; an opset-10 copy is still refused.
        var model = OnnxModelReader.Load(FixturePath(Path.Combine("check", "mlp_opset11.onnx")));
        GradientAssert.Passes(model);
        var old = model.Clone();
        foreach (var o in old.OpsetImport) if (string.IsNullOrEmpty(o.Domain)) o.Version = 10;
        var e = Assert.Throws<UnsupportedModelException>(() => GradientChecker.Check(old));
        Assert.Contains("opset 10", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Training_mode_dropout_fixture_passes_with_ratio_forced_to_zero()
    {
        // With training_mode=true the forward pass draws a new mask on every run, so finite differences are
        // meaningless; with ratio 0 the mask keeps everything and the graph (still in training mode, through the
        // Dropout gradient rule and its mask output) is deterministic.
        var model = OnnxModelReader.Load(FixturePath(Path.Combine("check", "misc_ops_train_dropout.onnx")));
        var dropout = model.Graph.Node.Single(n => n.OpType == "Dropout");
        var ratioNode = model.Graph.Node.Single(n => n.OpType == "Constant" && n.Output[0] == dropout.Input[1]);
        var value = ratioNode.Attribute.Single(a => a.Name == "value");
        Assert.NotEqual(0f, TensorProtos.ToFloatArray(value.T)[0]);
        value.T = TensorProtos.Float(value.T.Name, [0f]);
        GradientAssert.Passes(model, requireDouble: false);
    }
}

/// <summary>A fact that runs only when ONNXTUNE_MINILM points at all-MiniLM-L6-v2's model.onnx.</summary>
public sealed class MiniLmFactAttribute : FactAttribute
{
    /// <summary>Sets <see cref="FactAttribute.Skip"/> when the model is not available.</summary>
    public MiniLmFactAttribute()
    {
        var path = Environment.GetEnvironmentVariable("ONNXTUNE_MINILM");
        if (string.IsNullOrEmpty(path)) Skip = "Set ONNXTUNE_MINILM to all-MiniLM-L6-v2's model.onnx to run the full-model gradient check.";
        else if (!File.Exists(path)) Skip = $"ONNXTUNE_MINILM points at '{path}', which does not exist.";
    }
}

public class MiniLmGradientTests(ITestOutputHelper output)
{
    [MiniLmFact]
    public void Whole_MiniLM_graph_with_top_two_layers_trainable()
    {
        var model = OnnxModelReader.Load(Environment.GetEnvironmentVariable("ONNXTUNE_MINILM")!);
        // The exporter names biases and LayerNorm weights; the MatMul weights are anonymous initializers, so the
        // last 12 MatMul weights (6 per layer) are added by position. The small embedding tables (Gather, hence
        // ScatterND with reduction and the opset raise from 13 to 16) make the gradient run through all six layers;
        // the 30522-row word table is left out only because the checker feeds every parameter on every probe.
        var floatInits = model.Graph.Initializer.Where(t => t.DataType == (int)global::Onnx.TensorProto.Types.DataType.Float).Select(t => t.Name).ToHashSet();
        var matmulWeights = model.Graph.Node.Where(n => n.OpType == "MatMul").Select(n => n.Input[1]).Where(floatInits.Contains).ToList();
        var dims = model.Graph.Input[0].Type.TensorType.Shape.Dim;
        var options = new GradientCheckOptions
        {
            Selection = new ParameterSelection { Trainable = ["embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.*", "encoder.layer.4.*", "encoder.layer.5.*", .. matmulWeights.TakeLast(12)] },
            DimValues = new Dictionary<string, long> { [dims[0].DimParam] = 2, [dims[1].DimParam] = 4 },
            MaxElementsPerParameter = 6,
            Seed = 7,
        };
        var clock = Stopwatch.StartNew();
        var report = GradientChecker.Check(model, options);
        output.WriteLine($"MiniLM gradient check: {report.Parameters.Count} parameters, {(report.DoublePrecision ? "float64" : "float32")}, loss {report.Loss:G6}, {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var p in report.Parameters)
            output.WriteLine($"  {p.Name}: max rel {p.MaxRelativeError:E2}, max abs {p.MaxAbsoluteError:E2}, {(p.Passed ? "ok" : "FAIL")}");
        Assert.Equal(36, report.Parameters.Count);
        Assert.True(report.Passed, "MiniLM gradient check failed; see output.");
    }
}
