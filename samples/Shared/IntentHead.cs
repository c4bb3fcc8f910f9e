using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.Models;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training;
using OnnxTune.Training.Loops;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Samples;

/// <summary>The intent model both samples serve: a linear head (Gemm 384→classes) over MiniLM sentence embeddings.</summary>
internal static class IntentHead
{
    public const string InputName = "embedding";
    public const string OutputName = "logits";

    /// <summary>Embeddings of <paramref name="texts"/>, read from <paramref name="cachePath"/> when it holds exactly these texts.</summary>
    public static float[] EmbedCached(string cachePath, IReadOnlyList<string> texts, Func<SentenceEmbedder> embedder, Action<int, int>? progress = null)
    {
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\n", texts))));
        if (File.Exists(cachePath))
        {
            try
            {
                var file = SafeTensorsFile.Read(cachePath);
                if (file.Metadata.TryGetValue("texts_sha256", out var k) && k == key)
                    return file.Get("embeddings").ToFloatArray();
            }
            catch (SafeTensorsFormatException)
            {
                // recompute below
            }
        }
        var x = embedder().EmbedAll(texts, progress: done => progress?.Invoke(done, texts.Count));
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(cachePath))!);
        new SafeTensorsFile(
            [SafeTensor.FromFloats("embeddings", x, texts.Count, SentenceEmbedder.Dimension)],
            new Dictionary<string, string> { ["texts_sha256"] = key, ["model"] = "all-MiniLM-L6-v2", ["pooling"] = "mean, L2-normalised" }).Write(cachePath);
        return x;
    }

    /// <summary>
    /// Trains a fresh head on (<paramref name="x"/>, <paramref name="y"/>) with AdamW through a scratch artifacts folder,
    /// then writes the app's artifacts folder built from the trained head (its checkpoint starts from the trained
    /// weights, with fresh optimizer state), the intent names in the manifest property <c>labels</c>.
    /// </summary>
    public static void PretrainAndBuildArtifacts(string artifactsDir, IReadOnlyList<string> labels, float[] x, long[] y, int epochs, double learningRate, int hidden = 0, int seed = 1)
    {
        var dim = SentenceEmbedder.Dimension;
        var mlp = new MlpModelBuilder(dim) { InputName = InputName, OutputName = OutputName };
        if (hidden > 0) mlp.Layer(hidden);
        var model = mlp.Layer(labels.Count).Build(seed: seed);
        var scratch = artifactsDir + ".pretrain";
        if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        ArtifactBuilder.Save(Build(model, labels, learningRate), scratch);
        var trainedPath = Path.Combine(scratch, "trained.onnx");
        using (var session = TrainingEngine.Open(scratch, new TrainingEngineOptions { IntraOpThreads = 2, Seed = seed }))
        {
            var xb = new float[32 * dim];
            var yb = new long[32];
            // The sampler's index arrays are stacked into two reused buffers (the engine wraps them without copying).
            var batches = IndexedBatches.Shuffled(y.Length, 32, seed, indices =>
            {
                for (var i = 0; i < indices.Length; i++)
                {
                    x.AsSpan(indices[i] * dim, dim).CopyTo(xb.AsSpan(i * dim));
                    yb[i] = y[indices[i]];
                }
                return new TrainingBatch().Add(InputName, xb.AsMemory(0, indices.Length * dim), indices.Length, dim).WithLabels(yb.AsMemory(0, indices.Length), indices.Length);
            });
            if (epochs > 0) TrainingLoop.Run(session, batches, new TrainingLoopOptions { Epochs = epochs });
            session.ExportInferenceModel(trainedPath);
        }
        var trained = OnnxModelReader.Load(trainedPath);
        if (Directory.Exists(artifactsDir)) Directory.Delete(artifactsDir, recursive: true);
        ArtifactBuilder.Save(Build(trained, labels, learningRate), artifactsDir);
        Directory.Delete(scratch, recursive: true);
    }

    private static TrainingArtifacts Build(global::Onnx.ModelProto model, IReadOnlyList<string> labels, double learningRate) =>
        ArtifactBuilder.Build(model, new ArtifactOptions
        {
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = OutputName, IgnoreIndex = -100 },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = learningRate },
            Properties = new Dictionary<string, string> { ["labels"] = JsonSerializer.Serialize(labels) },
        });

    /// <summary>Writes a golden set (JSON lines of <c>{"tensors":{...},"label":"intent"}</c>) for the hosting gate.</summary>
    public static void WriteGoldenSet(string path, float[] x, IReadOnlyList<string> labels)
    {
        var dim = SentenceEmbedder.Dimension;
        var sb = new StringBuilder();
        for (var i = 0; i < labels.Count; i++)
        {
            var row = x.AsSpan(i * dim, dim).ToArray();
            sb.Append("{\"tensors\":{\"").Append(InputName).Append("\":{\"type\":\"float\",\"shape\":[1,").Append(dim).Append("],\"data\":")
              .Append(JsonSerializer.Serialize(row)).Append("}},\"label\":").Append(JsonSerializer.Serialize(labels[i])).Append("}\n");
        }
        Onnx.ModelIO.AtomicFile.WriteAllText(path, sb.ToString());
    }

    /// <summary>Index of the largest value of each row of a <c>[rows, classes]</c> flat array.</summary>
    public static int[] ArgMax(float[] logits, int classes)
    {
        var rows = logits.Length / classes;
        var result = new int[rows];
        for (var r = 0; r < rows; r++)
        {
            var row = logits.AsSpan(r * classes, classes);
            var best = 0;
            for (var c = 1; c < classes; c++) if (row[c] > row[best]) best = c;
            result[r] = best;
        }
        return result;
    }
}
