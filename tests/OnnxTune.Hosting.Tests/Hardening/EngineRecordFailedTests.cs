using Microsoft.Extensions.Logging.Abstractions;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.Tests.Engine;
using OnnxTune.Hosting.Training;

namespace OnnxTune.Hosting.Tests.Hardening;

/// <summary>The default engine reports records it cannot use through <see cref="FineTuningRoundInput.RecordFailed"/> and trains on the rest.</summary>
public sealed class EngineRecordFailedTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Unusable_records_are_reported_and_skipped_instead_of_failing_the_round()
    {
        var artifacts = Clusters.WriteArtifacts(_dir.Sub("artifacts"));
        var manifest = ArtifactManifest.Load(artifacts);
        var engine = new TrainingEngineFineTuningRound(new TensorFeedbackEncoder("m"), NullLogger.Instance);
        var fresh = Clusters.Sample(20, 1).Select((r, i) => new FeedbackRecord { Id = $"r{i}", Sequence = i + 1, Tensors = Clusters.Tensors(r.X), LabelIndex = r.Y }).ToList();
        fresh.Add(new FeedbackRecord { Id = "text", Sequence = 21, Text = "a text record for a tensor model", LabelIndex = 1 });
        fresh.Add(new FeedbackRecord { Id = "batch2", Sequence = 22, Tensors = new Dictionary<string, TensorData> { [Clusters.Input] = TensorData.Float(new float[16], 2, 8) }, LabelIndex = 1 });
        FineTuningRoundInput Input(string work) => new("m", 1, artifacts, manifest, Path.Combine(artifacts, manifest.Files.InferenceModel),
            Path.Combine(artifacts, manifest.Files.Checkpoint), fresh, [], 1, 8, 0.01, 1, Directory.CreateDirectory(_dir.Sub(work)).FullName);

        // Without the hook the first bad record fails the round (as before).
        await Assert.ThrowsAsync<OnnxTuneException>(() => engine.RunAsync(Input("w0"), CancellationToken.None));

        var failed = new List<(string Id, string Message)>();
        var result = await engine.RunAsync(Input("w1") with { RecordFailed = (r, e) => failed.Add((r.Id, e.Message)) }, CancellationToken.None);
        Assert.Equal(["text", "batch2"], failed.Select(f => f.Id));
        Assert.Contains("no text encoder", failed[0].Message, StringComparison.Ordinal);
        Assert.Contains("leading (batch) dim must be 1", failed[1].Message, StringComparison.Ordinal);
        Assert.Equal(3, result.Steps); // 20 good records, batch 8
    }
}
