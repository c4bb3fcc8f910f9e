using Microsoft.Extensions.Logging.Abstractions;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.Training;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>The engine on its own: starting point, step accounting, cancellation and bad records.</summary>
public sealed class TrainingEngineFineTuningRoundTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _artifacts;
    private readonly ArtifactManifest _manifest;
    private readonly TrainingEngineFineTuningRound _engine = new(new TensorFeedbackEncoder("m"), NullLogger.Instance);

    public TrainingEngineFineTuningRoundTests()
    {
        _artifacts = Clusters.WriteArtifacts(_dir.Sub("artifacts"));
        _manifest = ArtifactManifest.Load(_artifacts);
    }

    public void Dispose() => _dir.Dispose();

    private static List<FeedbackRecord> Records(int count, int seed, string prefix) =>
        Clusters.Sample(count, seed).Select((r, i) => new FeedbackRecord { Id = $"{prefix}{i}", Tensors = Clusters.Tensors(r.X), LabelIndex = r.Y }).ToList();

    private FineTuningRoundInput Input(string work, IReadOnlyList<FeedbackRecord> fresh, string? model = null, string? checkpoint = null,
        int epochs = 2, int batch = 16, double lr = 0.01, long round = 1, IReadOnlyList<FeedbackRecord>? replay = null) =>
        new("m", round, _artifacts, _manifest,
            model ?? Path.Combine(_artifacts, _manifest.Files.InferenceModel),
            checkpoint ?? Path.Combine(_artifacts, _manifest.Files.Checkpoint),
            fresh, replay ?? [], epochs, batch, lr, 1, Directory.CreateDirectory(_dir.Sub(work)).FullName);

    private static float[] Initializer(string modelPath, string name) =>
        TensorProtos.ToFloatArray(OnnxModelReader.Load(modelPath).Graph.Initializer.Single(t => t.Name == name));

    [Fact]
    public async Task Counts_steps_per_batch_and_continues_from_the_serving_checkpoint()
    {
        // 40 new + 10 replay (5 of them duplicates of new ids) = 45 distinct records, batch 16 -> 3 steps/epoch.
        var fresh = Records(40, seed: 1, "r");
        var replay = fresh.Take(5).Concat(Records(5, seed: 2, "old")).ToList();
        var first = await _engine.RunAsync(Input("w1", fresh, replay: replay), CancellationToken.None);
        Assert.Equal(6, first.Steps);
        Assert.Equal(6, CheckpointStore.Load(first.CandidateCheckpointPath).Metadata.Step);
        Assert.True(File.Exists(first.CandidateModelPath));
        Assert.True(double.IsFinite(first.TrainLoss) && first.TrainLoss > 0);

        // A second round from the candidate: a vanishing learning rate leaves the weights where the checkpoint had them,
        // and the optimizer step count continues.
        var second = await _engine.RunAsync(
            Input("w2", Records(16, seed: 3, "s"), model: first.CandidateModelPath, checkpoint: first.CandidateCheckpointPath, epochs: 1, lr: 1e-12, round: 2),
            CancellationToken.None);
        Assert.Equal(1, second.Steps);
        Assert.Equal(7, CheckpointStore.Load(second.CandidateCheckpointPath).Metadata.Step);
        foreach (var p in _manifest.TrainableParameters)
        {
            var before = Initializer(first.CandidateModelPath, p.Name);
            var after = Initializer(second.CandidateModelPath, p.Name);
            var baseline = Initializer(Path.Combine(_artifacts, _manifest.Files.InferenceModel), p.Name);
            Assert.Equal(before.Length, after.Length);
            for (var i = 0; i < before.Length; i++) Assert.Equal(before[i], after[i], 1e-6f);
            Assert.Contains(before.Select((v, i) => Math.Abs(v - baseline[i])), d => d > 1e-3);
        }
    }

    [Fact]
    public async Task Without_a_checkpoint_starts_from_the_serving_model_weights()
    {
        var first = await _engine.RunAsync(Input("w1", Records(32, seed: 1, "r")), CancellationToken.None);
        // Serving model = the first candidate, but its checkpoint is gone: the weights come from the model file.
        var second = await _engine.RunAsync(
            Input("w2", Records(16, seed: 3, "s"), model: first.CandidateModelPath, checkpoint: _dir.Sub("missing"), epochs: 1, lr: 1e-12, round: 2),
            CancellationToken.None);
        foreach (var p in _manifest.TrainableParameters)
        {
            var before = Initializer(first.CandidateModelPath, p.Name);
            var after = Initializer(second.CandidateModelPath, p.Name);
            for (var i = 0; i < before.Length; i++) Assert.Equal(before[i], after[i], 1e-6f);
        }
        Assert.Equal(1, CheckpointStore.Load(second.CandidateCheckpointPath).Metadata.Step);
    }

    [Fact]
    public async Task Cancellation_between_steps_writes_nothing()
    {
        using var cts = new CancellationTokenSource();
        var input = Input("w", Records(64, seed: 1, "r"), epochs: 100_000, batch: 4);
        var run = _engine.RunAsync(input, cts.Token);
        await Task.Delay(200);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
        Assert.Empty(Directory.EnumerateFileSystemEntries(input.WorkingDirectory));
    }

    [Fact]
    public async Task Record_with_more_than_one_example_is_rejected_by_id_and_tensor()
    {
        var bad = new FeedbackRecord { Id = "two-rows", Tensors = new Dictionary<string, TensorData> { [Clusters.Input] = TensorData.Float(new float[16], 2, 8) }, LabelIndex = 0 };
        var e = await Assert.ThrowsAsync<OnnxTuneException>(() => _engine.RunAsync(Input("w", [.. Records(4, 1, "r"), bad]), CancellationToken.None));
        Assert.Contains("two-rows", e.Message, StringComparison.Ordinal);
        Assert.Contains("'features'", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir.Sub("w")));
    }

    [Fact]
    public async Task Artifacts_without_a_cross_entropy_loss_are_refused_by_name()
    {
        var input = Input("w", Records(4, 1, "r")) with { Manifest = _manifest with { Loss = _manifest.Loss with { Kind = LossKind.Mse } } };
        var e = await Assert.ThrowsAsync<OnnxTuneException>(() => _engine.RunAsync(input, CancellationToken.None));
        Assert.Contains("Mse", e.Message, StringComparison.Ordinal);
        Assert.Contains("cross-entropy", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Weight_zero_records_are_skipped()
    {
        var records = Records(20, seed: 1, "r").Select((r, i) => i < 4 ? r : r with { Weight = 0 }).ToList();
        var result = await _engine.RunAsync(Input("w", records, epochs: 1, batch: 2), CancellationToken.None);
        Assert.Equal(2, result.Steps);
        var none = await Assert.ThrowsAsync<OnnxTuneException>(() =>
            _engine.RunAsync(Input("w2", records.Skip(4).ToList()), CancellationToken.None));
        Assert.Contains("weight 0", none.Message, StringComparison.Ordinal);
    }
}
