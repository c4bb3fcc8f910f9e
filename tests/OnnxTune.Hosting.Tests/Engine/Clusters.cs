using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Hosting.Internal;
using OnnxTune.Onnx.Models;

namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>
/// Synthetic separable data (8 features, 4 Gaussian clusters: class k is centred at 3 on features 2k and 2k+1, noise
/// σ = 0.7) and real training artifacts for an MLP 8→16→4 (ReLU, PyTorch nn.Linear init, cross-entropy, AdamW).
/// </summary>
internal static class Clusters
{
    public const int Features = 8;
    public const int Classes = 4;
    public const string Input = "features";
    public const string Output = "logits";

    /// <summary>Writes the artifacts; <paramref name="weightedAndDistilled"/> adds the sample-weight and distillation inputs text heads have.</summary>
    public static string WriteArtifacts(string dir, int seed = 3, bool weightedAndDistilled = false, IReadOnlyList<string>? frozen = null)
    {
        var model = new MlpModelBuilder(Features) { InputName = Input, OutputName = Output }.Layer(16).Layer(Classes).Build(seed);
        var artifacts = ArtifactBuilder.Build(model, new ArtifactOptions
        {
            Loss = weightedAndDistilled
                ? new LossSpec { Kind = LossKind.CrossEntropy, OutputName = Output, SampleWeightName = "sample_weights", DistillationTargetName = "teacher_logits", DistillationWeightName = "distillation_weights" }
                : new LossSpec { Kind = LossKind.CrossEntropy, OutputName = Output },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW },
            Selection = new ParameterSelection { Frozen = frozen ?? [] },
        });
        ArtifactBuilder.Save(artifacts, dir);
        return dir;
    }

    public static List<(float[] X, int Y)> Sample(int count, int seed)
    {
        var rng = new Random(seed);
        var list = new List<(float[], int)>(count);
        for (var i = 0; i < count; i++)
        {
            var y = rng.Next(Classes);
            var x = new float[Features];
            for (var j = 0; j < Features; j++) x[j] = (j / 2 == y ? 3f : 0f) + 0.7f * Gaussian(rng);
            list.Add((x, y));
        }
        return list;
    }

    public static Dictionary<string, TensorData> Tensors(float[] x) => new() { [Input] = TensorData.Float(x, 1, Features) };

    /// <summary>Writes a golden set (JSON lines with tensors and a label index).</summary>
    public static string WriteGoldenSet(string path, IEnumerable<(float[] X, int Y)> rows)
    {
        File.WriteAllLines(path, rows.Select(r => $"{{\"tensors\":{FeedbackJson.WriteTensors(Tensors(r.X))},\"label\":{r.Y}}}"));
        return path;
    }

    public static int Argmax(IModelHandle handle, float[] x)
    {
        var logits = handle.Predict(Tensors(x)).Outputs[Output].FloatData!;
        return Array.IndexOf(logits, logits.Max());
    }

    public static double Accuracy(IModelHandle handle, IReadOnlyList<(float[] X, int Y)> rows) =>
        rows.Count(r => Argmax(handle, r.X) == r.Y) / (double)rows.Count;

    private static float Gaussian(Random rng) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
}
