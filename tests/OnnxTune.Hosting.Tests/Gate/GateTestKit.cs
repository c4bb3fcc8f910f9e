using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Hosting.Tests.Gate;

/// <summary>
/// K-class y = x·W + b models over K features (class c's inputs are near the c-th unit vector), artifacts around them,
/// and a round engine that returns the next scripted candidate (it trains nothing).
/// </summary>
internal static class GateKit
{
    public static void WriteLinear(string path, int k, float[] w, float[] b)
    {
        var graph = new GraphProto { Name = "linear" };
        var ed = new GraphEditor(graph);
        ed.AddInput(ValueInfos.Tensor("x", DataType.Float, "batch", (long)k));
        var wName = ed.AddInitializer(TensorProtos.Float("W", w, k, k), makeUnique: false);
        var bName = ed.AddInitializer(TensorProtos.Float("b", b, k), makeUnique: false);
        var mm = ed.Add("MatMul", ["x", wName], "xw");
        ed.AddNode("Add", [mm, bName], ["y"]);
        ed.AddOutput(ValueInfos.Tensor("y", DataType.Float, "batch", (long)k));
        var model = new ModelProto { IrVersion = 8, Graph = graph, ProducerName = "OnnxTune.Hosting.Tests" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        OnnxModelWriter.Save(model, path);
    }

    /// <summary>Identity weights with class <paramref name="from"/>'s feature sent to class <paramref name="to"/> for each (from, to).</summary>
    public static (float[] W, float[] B) Mapping(int k, params (int From, int To)[] moves)
    {
        var w = new float[k * k];
        for (var i = 0; i < k; i++) w[i * k + i] = 1;
        foreach (var (from, to) in moves)
        {
            w[from * k + from] = 0;
            w[from * k + to] = 1;
        }
        return (w, new float[k]);
    }

    public static string WriteArtifacts(string dir, int k, (float[] W, float[] B) model, IReadOnlyDictionary<string, string>? properties = null)
    {
        Directory.CreateDirectory(dir);
        WriteLinear(Path.Combine(dir, "inference_model.onnx"), k, model.W, model.B);
        Directory.CreateDirectory(Path.Combine(dir, "checkpoint"));
        File.WriteAllText(Path.Combine(dir, "checkpoint", "checkpoint.json"), "{\"step\":0}");
        new ArtifactManifest
        {
            Inputs = [new TensorSpec("x", "float", ["batch", k.ToString(System.Globalization.CultureInfo.InvariantCulture)])],
            Outputs = [new TensorSpec("y", "float", ["batch", k.ToString(System.Globalization.CultureInfo.InvariantCulture)])],
            Loss = new LossSpec { OutputName = "y", LabelElementType = "int64" },
            Opset = 17,
            Properties = properties ?? new Dictionary<string, string>(),
        }.Save(dir);
        return dir;
    }

    /// <summary>An input near the unit vector of <paramref name="cls"/> (noise in [0, 0.3) elsewhere).</summary>
    public static float[] Near(int k, int cls, Random rng)
    {
        var x = new float[k];
        for (var i = 0; i < k; i++) x[i] = (float)(rng.NextDouble() * 0.3);
        x[cls] = 1;
        return x;
    }

    public static Dictionary<string, TensorData> Input(float[] x) => new() { ["x"] = TensorData.Float(x, 1, x.Length) };

    public static FeedbackRecord Record(float[] x, int label, bool heldOut, string? user = null, float weight = 1) => new()
    {
        Id = Guid.NewGuid().ToString("N"),
        CreatedAt = DateTimeOffset.UnixEpoch,
        Tensors = Input(x),
        LabelIndex = label,
        Weight = weight,
        UserId = user,
        HeldOut = heldOut,
    };

    /// <summary>Appends records straight to the store (the side chosen by the test, as records of an older store keep theirs).</summary>
    public static async Task AppendAsync(IFeedbackStore store, IEnumerable<FeedbackRecord> records)
    {
        foreach (var r in records) await store.AppendAsync(r);
    }

    public static string WriteJsonLines(string path, IEnumerable<(float[] X, int Y)> rows)
    {
        File.WriteAllLines(path, rows.Select(r => $"{{\"tensors\":{FeedbackJson.WriteTensors(Input(r.X))},\"label\":{r.Y}}}"));
        return path;
    }
}

/// <summary>Returns the next scripted K-class candidate; records every round's input.</summary>
internal sealed class ModelRound(int k) : IFineTuningRound
{
    public Queue<(float[] W, float[] B)> Script { get; } = new();
    public List<FineTuningRoundInput> Inputs { get; } = [];

    public ModelRound Then((float[] W, float[] B) model)
    {
        Script.Enqueue(model);
        return this;
    }

    public Task<FineTuningRoundResult> RunAsync(FineTuningRoundInput input, CancellationToken cancellationToken)
    {
        Inputs.Add(input);
        var (w, b) = Script.Dequeue();
        var model = Path.Combine(input.WorkingDirectory, "candidate.onnx");
        GateKit.WriteLinear(model, k, w, b);
        var ckpt = Directory.CreateDirectory(Path.Combine(input.WorkingDirectory, "checkpoint")).FullName;
        File.WriteAllText(Path.Combine(ckpt, "checkpoint.json"), "{}");
        return Task.FromResult(new FineTuningRoundResult(model, ckpt, 0.1, 1));
    }
}
