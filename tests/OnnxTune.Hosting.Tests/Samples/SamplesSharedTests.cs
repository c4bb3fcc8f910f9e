using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
using OnnxTune.Samples;

namespace OnnxTune.Hosting.Tests.Samples;

/// <summary>The code samples/OnnxTune.Demo and samples/OnnxTune.WebApp share (compiled in from samples/Shared).</summary>
public sealed class SamplesSharedTests : IDisposable
{
    private const int Dim = SentenceEmbedder.Dimension;
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxtune-samples-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Three well-separated clusters in embedding space, L2-normalised like the sentence embeddings.</summary>
    private static (float[] X, long[] Y) Clusters(int perClass, int seed)
    {
        var rng = new Random(seed);
        var x = new float[3 * perClass * Dim];
        var y = new long[3 * perClass];
        for (var i = 0; i < y.Length; i++)
        {
            y[i] = i % 3;
            var row = x.AsSpan(i * Dim, Dim);
            for (var d = 0; d < Dim; d++) row[d] = (float)(rng.NextDouble() - 0.5) * 0.02f;
            for (var d = 0; d < 16; d++) row[(int)y[i] * 16 + d] += 0.25f;
            var norm = MathF.Sqrt(row.ToArray().Sum(v => v * v));
            for (var d = 0; d < Dim; d++) row[d] /= norm;
        }
        return (x, y);
    }

    [Fact]
    public void Pretrained_head_artifacts_carry_the_labels_and_the_trained_weights()
    {
        string[] labels = ["alpha", "beta", "gamma"];
        var (x, y) = Clusters(20, seed: 1);
        var artifacts = Path.Combine(_dir, "artifacts");
        IntentHead.PretrainAndBuildArtifacts(artifacts, labels, x, y, epochs: 20, learningRate: 1e-2);

        var manifest = ArtifactManifest.Load(artifacts);
        Assert.Equal(labels, JsonSerializer.Deserialize<string[]>(manifest.Properties["labels"]));
        Assert.Equal(LossKind.CrossEntropy, manifest.Loss.Kind);
        Assert.False(Directory.Exists(artifacts + ".pretrain"));

        // The artifacts' inference model is the trained head: it separates fresh points of the clusters.
        var (tx, ty) = Clusters(10, seed: 2);
        using var session = new InferenceSession(Path.Combine(artifacts, manifest.Files.InferenceModel));
        using var input = OrtValue.CreateTensorValueFromMemory(tx, [ty.Length, Dim]);
        using var output = session.Run(new RunOptions(), [IntentHead.InputName], [input], [IntentHead.OutputName]);
        var predicted = IntentHead.ArgMax(output[0].GetTensorDataAsSpan<float>().ToArray(), labels.Length);
        Assert.Equal(ty.Select(v => (int)v), predicted);
    }

    [Fact]
    public void Golden_set_file_reads_back_through_the_hosting_reader()
    {
        var (x, y) = Clusters(2, seed: 3);
        var names = y.Select(v => $"intent_{v}").ToList();
        var path = Path.Combine(_dir, "golden.jsonl");
        IntentHead.WriteGoldenSet(path, x, names);

        var records = FeedbackJson.ReadGoldenSet(path);
        Assert.Equal(names.Count, records.Count);
        for (var i = 0; i < records.Count; i++)
        {
            Assert.Equal(names[i], records[i].Label.Name);
            var t = records[i].Tensors![IntentHead.InputName];
            Assert.Equal([1L, Dim], t.Shape);
            Assert.Equal(x.AsSpan(i * Dim, Dim).ToArray(), t.FloatData);
        }
    }

    [Fact]
    public void Embedding_cache_is_reused_only_for_the_same_texts()
    {
        var path = Path.Combine(_dir, "cache.safetensors");
        var calls = 0;
        SentenceEmbedder Fail()
        {
            calls++;
            throw new InvalidOperationException("the embedder was needed");
        }
        // Seed the cache in the file format EmbedCached writes, without running MiniLM.
        string[] texts = ["a", "b"];
        var key = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join("\n", texts))));
        var values = Enumerable.Range(0, 2 * Dim).Select(i => (float)i).ToArray();
        new OnnxTune.Training.SafeTensors.SafeTensorsFile(
            [OnnxTune.Training.SafeTensors.SafeTensor.FromFloats("embeddings", values, 2, Dim)],
            new Dictionary<string, string> { ["texts_sha256"] = key }).Write(path);

        Assert.Equal(values, IntentHead.EmbedCached(path, texts, Fail));
        Assert.Equal(0, calls);
        Assert.Throws<InvalidOperationException>(() => IntentHead.EmbedCached(path, ["a", "c"], Fail));
        Assert.Equal(1, calls);
    }

    [Fact]
    public void Clinc150_loads_ten_domains_of_fifteen_intents_in_domain_order()
    {
        var data = Clinc150.Load(Clinc150.Locate());
        Assert.Equal(10, data.Domains.Count);
        Assert.All(data.Domains, d => Assert.Equal(15, d.Intents.Count));
        Assert.Equal(data.Domains.SelectMany(d => d.Intents), data.Intents);
        Assert.Equal(150, data.Intents.Distinct().Count());
        var subset = Clinc150.Take(data.Train, 3);
        Assert.Equal(450, subset.Count);
        Assert.All(subset.GroupBy(u => u.Intent), g => Assert.Equal(3, g.Count()));
        Assert.All(data.Test, u => Assert.True(data.DomainOf.ContainsKey(u.Intent)));
    }
}
