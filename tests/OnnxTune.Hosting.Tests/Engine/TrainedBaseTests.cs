using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training;
using OnnxTune.Training.Trained;

namespace OnnxTune.Hosting.Tests.Engine;

/// <summary>A model trained offline as the hosted base (TrainedModelPath), and its replay set in every round.</summary>
public sealed class TrainedBaseTests : IDisposable
{
    private readonly TempDir _dir = new();

    public TrainedBaseTests() => Clusters.WriteArtifacts(_dir.Sub("artifacts"));

    public void Dispose() => _dir.Dispose();

    /// <summary>Trains the artifacts offline on the cluster data, as onnxtune train --out does, with a replay set.</summary>
    private string TrainOffline(string name, int seed)
    {
        var folder = _dir.Sub(name);
        var rows = Clusters.Sample(400, seed);
        using var session = TrainingEngine.Open(_dir.Sub("artifacts"), new TrainingEngineOptions { Seed = seed });
        session.LearningRate = 0.02;
        for (var epoch = 0; epoch < 5; epoch++)
            foreach (var chunk in rows.Chunk(20))
            {
                session.TrainStep(new TrainingBatch()
                    .Add(Clusters.Input, chunk.SelectMany(r => r.X).ToArray(), chunk.Length, Clusters.Features)
                    .WithLabels(chunk.Select(r => (long)r.Y).ToArray(), chunk.Length));
                session.OptimizerStep();
            }
        TrainedModelFolder.Save(session, folder);
        Clusters.WriteGoldenSet(Path.Combine(folder, TrainedModelFolder.ReplaySetFileName), rows.Take(60));
        return folder;
    }

    [Fact]
    public async Task A_trained_folder_is_served_as_the_base_and_its_replay_set_is_rehearsed()
    {
        var trained = TrainOffline("trained", seed: 5);
        var test = Clusters.Sample(200, seed: 100);
        var round = new ScriptedRound();
        await using (var untrained = await Harness.StartAsync(_dir, round, name: "untrained"))
            Assert.True(Clusters.Accuracy(untrained.Handle, test) < 0.6, "the artifacts' initial weights are untrained");

        await using var h = await Harness.StartAsync(_dir, round, o =>
        {
            o.TrainedModelPath = trained;
            o.ModelStorePath = _dir.Sub("store-trained");
        }, name: "trained");
        Assert.True(Clusters.Accuracy(h.Handle, test) > 0.9, "the trained folder's model is the one served");

        await h.WriteFeedbackAsync(0, 0, 0);
        foreach (var (x, y) in Clusters.Sample(12, seed: 7))
            await h.Writer.WriteAsync(Feedback.ForTensors(Clusters.Tensors(x), y));
        round.ThenThrow("inspect the input only");
        await h.NextRoundAsync();
        var input = round.Inputs[^1];
        Assert.Equal(Path.Combine(trained, TrainedModelFolder.CheckpointFolderName), input.ServingCheckpointPath);
        Assert.Equal(Path.Combine(trained, TrainedModelFolder.ModelFileName), input.ServingModelPath);
        // No earlier feedback yet: the whole replay sample (ReplayRatio 2 × new records) comes from the replay set, classes in turn.
        Assert.Equal((int)Math.Ceiling(input.NewFeedback.Count * 2.0), input.ReplaySample.Count);
        Assert.All(input.ReplaySample, r => Assert.StartsWith("replay-", r.Id, StringComparison.Ordinal));
        var perClass = input.ReplaySample.GroupBy(r => r.LabelIndex).Select(g => g.Count()).ToList();
        Assert.Equal(Clusters.Classes, perClass.Count);
        Assert.True(perClass.Max() - perClass.Min() <= 1, $"class-balanced replay, got [{string.Join(", ", perClass)}]");
        Assert.Equal(0.1, input.EncoderLearningRateScale);
        Assert.Equal(["head.*"], input.HeadParameters);
    }

    [Fact]
    public void A_model_exported_from_another_checkpoint_is_refused_by_name()
    {
        var trained = TrainOffline("trained", seed: 5);
        var other = TrainOffline("other", seed: 6);
        File.Copy(Path.Combine(other, TrainedModelFolder.ModelFileName), Path.Combine(trained, TrainedModelFolder.ModelFileName), overwrite: true);
        var manifest = OnnxTune.Autodiff.Artifacts.ArtifactManifest.Load(_dir.Sub("artifacts"));
        var e = Assert.Throws<TrainedModelMismatchException>(() => TrainedModelFolder.Verify(trained, manifest));
        Assert.Contains("differs between", e.Message);
    }

    [Fact]
    public async Task Host_start_fails_on_a_mismatched_trained_folder()
    {
        var trained = TrainOffline("trained", seed: 5);
        var model = OnnxModelReader.Load(Path.Combine(trained, TrainedModelFolder.ModelFileName));
        var w = model.Graph.Initializer.First(t => t.DataType == 1 && t.Dims.Count == 2);
        var values = TensorProtos.ToFloatArray(w);
        values[0] += 1f;
        w.ClearRawData();
        w.FloatData.Clear();
        w.FloatData.AddRange(values);
        OnnxModelWriter.Save(model, Path.Combine(trained, TrainedModelFolder.ModelFileName));
        var e = await Assert.ThrowsAsync<TrainedModelMismatchException>(() => Harness.StartAsync(_dir, new ScriptedRound(), o => o.TrainedModelPath = trained));
        Assert.Contains(w.Name, e.Message);
    }

    [Fact]
    public async Task Real_rounds_with_weights_and_distillation_learn_a_new_class_and_keep_the_old_ones()
    {
        // Offline: classes 0-2 only (the replay set too); class 3 arrives through feedback.
        Clusters.WriteArtifacts(_dir.Sub("artifacts-kd"), weightedAndDistilled: true);
        var folder = _dir.Sub("trained-kd");
        var known = Clusters.Sample(600, seed: 11).Where(r => r.Y < 3).ToList();
        using (var session = TrainingEngine.Open(_dir.Sub("artifacts-kd"), new TrainingEngineOptions { Seed = 1 }))
        {
            session.LearningRate = 0.02;
            for (var epoch = 0; epoch < 5; epoch++)
                foreach (var chunk in known.Chunk(20))
                {
                    session.TrainStep(new TrainingBatch()
                        .Add(Clusters.Input, chunk.SelectMany(r => r.X).ToArray(), chunk.Length, Clusters.Features)
                        .WithLabels(chunk.Select(r => (long)r.Y).ToArray(), chunk.Length));
                    session.OptimizerStep();
                }
            TrainedModelFolder.Save(session, folder);
        }
        Clusters.WriteGoldenSet(Path.Combine(folder, TrainedModelFolder.ReplaySetFileName), known.Take(90));
        var golden = Clusters.WriteGoldenSet(_dir.Sub("golden-kd.jsonl"), Clusters.Sample(80, seed: 12).Where(r => r.Y < 3));
        var test = Clusters.Sample(400, seed: 13);
        await using var h = await Harness.StartAsync(_dir, round: null, o =>
        {
            o.ArtifactsPath = _dir.Sub("artifacts-kd");
            o.TrainedModelPath = folder;
            o.ModelStorePath = _dir.Sub("store-kd");
            o.GoldenSetPath = golden;
            o.LearningRate = 0.01;
            o.EpochsPerRound = 5;
            o.MinHeldOutImprovement = 0;
        });
        var knownBefore = Clusters.Accuracy(h.Handle, test.Where(r => r.Y < 3).ToList());
        Assert.Equal(0, Clusters.Accuracy(h.Handle, test.Where(r => r.Y == 3).ToList()));
        // Feedback: mostly the new class, some known-class corrections, one record weighted up.
        var feedback = Clusters.Sample(200, seed: 14).Where(r => r.Y == 3).Take(40).Concat(Clusters.Sample(40, seed: 15).Where(r => r.Y < 3)).ToList();
        foreach (var (x, y) in feedback)
            await h.Writer.WriteAsync(new Feedback { Tensors = Clusters.Tensors(x), Label = y, Weight = y == 3 ? 1.5f : 1f });
        var e = await h.NextRoundAsync();
        Assert.True(e.Outcome == RoundOutcome.Promoted, $"{e.Outcome}: {e.Error}{string.Join("; ", e.Decision?.Reasons ?? [])}");
        Assert.True(Clusters.Accuracy(h.Handle, test.Where(r => r.Y == 3).ToList()) > 0.9, "the new class is learned");
        Assert.True(Clusters.Accuracy(h.Handle, test.Where(r => r.Y < 3).ToList()) >= knownBefore - 0.02, "the known classes hold");
    }
}
