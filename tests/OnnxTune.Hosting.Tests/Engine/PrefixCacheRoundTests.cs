using Microsoft.Extensions.Logging.Abstractions;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.Training;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>Rounds on the frozen-prefix cache train the same model as rounds without it.</summary>
public sealed class PrefixCacheRoundTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly TrainingEngineFineTuningRound _engine = new(new TensorFeedbackEncoder("m"), NullLogger.Instance);

    public void Dispose() => _dir.Dispose();

    private static List<FeedbackRecord> Records(int count, int seed, string prefix) =>
        Clusters.Sample(count, seed).Select((r, i) => new FeedbackRecord { Id = $"{prefix}{i}", Tensors = Clusters.Tensors(r.X), LabelIndex = r.Y }).ToList();

    private static FineTuningRoundInput Input(string artifacts, string work, IReadOnlyList<FeedbackRecord> fresh, IReadOnlyList<FeedbackRecord> replay, string? cache, long round = 1, string? model = null, string? checkpoint = null)
    {
        var manifest = ArtifactManifest.Load(artifacts);
        return new("m", round, artifacts, manifest,
            model ?? Path.Combine(artifacts, manifest.Files.InferenceModel),
            checkpoint ?? Path.Combine(artifacts, manifest.Files.Checkpoint),
            fresh, replay, 2, 8, 0.01, 1, Directory.CreateDirectory(work).FullName)
        { PrefixCacheDirectory = cache };
    }

    private static Dictionary<string, float[]> Weights(string model) =>
        OnnxModelReader.Load(model).Graph.Initializer.ToDictionary(t => t.Name, t => TensorProtos.ToFloatArray(t));

    [Fact]
    public async Task Cached_rounds_match_full_rounds_and_reuse_activations_across_rounds()
    {
        var artifacts = Clusters.WriteArtifacts(_dir.Sub("artifacts"), frozen: ["fc1.*"]);
        var cacheRoot = _dir.Sub("prefix-cache");
        var fresh = Records(30, 1, "r");
        var replay = Records(10, 2, "old");

        var full = await _engine.RunAsync(Input(artifacts, _dir.Sub("full"), fresh, replay, cache: null), CancellationToken.None);
        var cached = await _engine.RunAsync(Input(artifacts, _dir.Sub("cached"), fresh, replay, cacheRoot), CancellationToken.None);
        Assert.Equal(full.Steps, cached.Steps);
        Assert.Equal(full.TrainLoss, cached.TrainLoss, 5);
        var a = Weights(full.CandidateModelPath);
        var b = Weights(cached.CandidateModelPath);
        Assert.Equal(a.Keys.Order(), b.Keys.Order()); // the whole model was exported, not the suffix
        foreach (var (name, values) in a)
            for (var i = 0; i < values.Length; i++)
                Assert.True(Math.Abs(values[i] - b[name][i]) <= 1e-5f * (1 + Math.Abs(values[i])), $"{name}[{i}]: {values[i]} vs {b[name][i]}");
        var baseFc1 = Weights(Path.Combine(artifacts, "inference_model.onnx"))["fc1.weight"];
        Assert.Equal(baseFc1, b["fc1.weight"]); // frozen
        Assert.NotEqual(Weights(Path.Combine(artifacts, "inference_model.onnx"))["fc2.weight"], b["fc2.weight"]);

        var folder = Assert.Single(Directory.GetDirectories(cacheRoot));
        Assert.True(File.Exists(Path.Combine(folder, "activations.safetensors")));
        Assert.True(File.Exists(Path.Combine(folder, "artifacts", "manifest.json")));

        // Round 2 continues from the cached candidate's checkpoint; the full engine reads that checkpoint too.
        var next = Records(12, 3, "s");
        var again = await _engine.RunAsync(Input(artifacts, _dir.Sub("cached2"), next, fresh.Take(6).ToList(), cacheRoot, 2, cached.CandidateModelPath, cached.CandidateCheckpointPath), CancellationToken.None);
        var plain = await _engine.RunAsync(Input(artifacts, _dir.Sub("full2"), next, fresh.Take(6).ToList(), null, 2, cached.CandidateModelPath, cached.CandidateCheckpointPath), CancellationToken.None);
        var c = Weights(again.CandidateModelPath);
        foreach (var (name, values) in Weights(plain.CandidateModelPath))
            for (var i = 0; i < values.Length; i++)
                Assert.True(Math.Abs(values[i] - c[name][i]) <= 1e-5f * (1 + Math.Abs(values[i])), $"round 2 {name}[{i}]");
    }

    [Fact]
    public async Task Models_without_a_frozen_prefix_train_in_full_and_say_why_once()
    {
        var artifacts = Clusters.WriteArtifacts(_dir.Sub("artifacts-all"));
        var cacheRoot = _dir.Sub("prefix-cache");
        var result = await _engine.RunAsync(Input(artifacts, _dir.Sub("w"), Records(16, 1, "r"), [], cacheRoot), CancellationToken.None);
        Assert.True(result.Steps > 0);
        var folder = Directory.Exists(cacheRoot) ? Directory.GetDirectories(cacheRoot) : [];
        Assert.All(folder, f => Assert.False(Directory.Exists(Path.Combine(f, "artifacts"))));
    }
}
