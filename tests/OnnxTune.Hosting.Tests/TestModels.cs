using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Hosting.Tests;

/// <summary>Tiny y = x·W + b models (x: [batch,4], y: [batch,3]) and artifacts folders around them.</summary>
internal static class TestModels
{
    public const int In = 4;
    public const int Out = 3;

    public static void WriteLinear(string path, float[] w, float[] b)
    {
        var graph = new GraphProto { Name = "linear" };
        var ed = new GraphEditor(graph);
        ed.AddInput(ValueInfos.Tensor("x", DataType.Float, "batch", (long)In));
        var wName = ed.AddInitializer(TensorProtos.Float("W", w, In, Out), makeUnique: false);
        var bName = ed.AddInitializer(TensorProtos.Float("b", b, Out), makeUnique: false);
        var mm = ed.Add("MatMul", ["x", wName], "xw");
        ed.AddNode("Add", [mm, bName], ["y"]);
        ed.AddOutput(ValueInfos.Tensor("y", DataType.Float, "batch", (long)Out));
        var model = new ModelProto { IrVersion = 8, Graph = graph, ProducerName = "OnnxTune.Hosting.Tests" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        OnnxModelWriter.Save(model, path);
    }

    /// <summary>W = identity-like scaled by <paramref name="scale"/>, b filled with <paramref name="bias"/>.</summary>
    public static (float[] W, float[] B) Params(float scale, float[] bias)
    {
        var w = new float[In * Out];
        for (var i = 0; i < In; i++) w[i * Out + (i % Out)] = scale;
        return (w, bias);
    }

    public static float[] Expected(float[] x, float[] w, float[] b)
    {
        var y = new float[Out];
        for (var j = 0; j < Out; j++)
        {
            var s = 0f;
            for (var i = 0; i < In; i++) s += x[i] * w[i * Out + j];
            y[j] = s + b[j];
        }
        return y;
    }

    /// <summary>An artifacts folder whose inference model always favours <paramref name="favouredClass"/>.</summary>
    public static string WriteArtifacts(string dir, int favouredClass = 0, IReadOnlyDictionary<string, string>? properties = null)
    {
        Directory.CreateDirectory(dir);
        var (w, b) = Biased(favouredClass);
        WriteLinear(Path.Combine(dir, "inference_model.onnx"), w, b);
        Directory.CreateDirectory(Path.Combine(dir, "checkpoint"));
        File.WriteAllText(Path.Combine(dir, "checkpoint", "checkpoint.json"), "{\"step\":0}");
        new ArtifactManifest
        {
            Inputs = [new TensorSpec("x", "float", ["batch", "4"])],
            Outputs = [new TensorSpec("y", "float", ["batch", "3"])],
            Loss = new LossSpec { OutputName = "y", LabelElementType = "int64" },
            Opset = 17,
            Properties = properties ?? new Dictionary<string, string>(),
        }.Save(dir);
        return dir;
    }

    /// <summary>Small weights plus a large bias on one class: the argmax is that class for inputs in [0,1).</summary>
    public static (float[] W, float[] B) Biased(int favouredClass)
    {
        var b = new float[Out];
        b[favouredClass] = 10f;
        return Params(0.1f, b);
    }

    public static TensorData X(Random rng)
    {
        var x = new float[In];
        for (var i = 0; i < In; i++) x[i] = (float)rng.NextDouble();
        return TensorData.Float(x, 1, In);
    }

    public static Dictionary<string, TensorData> Input(TensorData x) => new() { ["x"] = x };
}

internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "onnxtune-hosting-" + Guid.NewGuid().ToString("N"));

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
