using System.Text.Json.Nodes;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Checkpoints;

public sealed class CheckpointStoreTests
{
    private static CheckpointMetadata Meta() => new()
    {
        Step = 42,
        LearningRate = 3e-4,
        Schedule = LearningRateSchedules.CosineWithWarmup(3e-4, 10, 100).State,
        Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, Momentum = 0.9 },
        Parameters = [new CheckpointTensor("w", "float", [2, 2])],
        OptimizerStates = [new CheckpointTensor("w.momentum_buffer", "float", [2, 2])],
        UserProperties = new Dictionary<string, string> { ["round"] = "7", ["model"] = "intent-v3" },
    };

    private static SafeTensor[] Tensors() =>
        [SafeTensor.FromFloats("w", [1, 2, 3, 4], 2, 2), SafeTensor.FromFloats("w.momentum_buffer", [0.1f, 0.2f, 0.3f, 0.4f], 2, 2)];

    [Fact]
    public void Round_trip_keeps_metadata_and_tensors()
    {
        using var dir = new TempDirectory();
        CheckpointStore.Save(dir.Path, Meta(), Tensors());
        Assert.True(CheckpointStore.Exists(dir.Path));
        var (meta, tensors) = CheckpointStore.Load(dir.Path);
        Assert.Equal(42, meta.Step);
        Assert.Equal(3e-4, meta.LearningRate);
        Assert.Equal("cosine", meta.Schedule!.Kind);
        Assert.Equal(100, meta.Schedule.TotalSteps);
        Assert.Equal(OptimizerKind.Sgd, meta.Optimizer.Kind);
        Assert.Equal(0.9, meta.Optimizer.Momentum);
        Assert.Equal("intent-v3", meta.UserProperties["model"]);
        Assert.Equal([2L, 2L], meta.Parameters[0].Shape);
        Assert.Equal(64, meta.TensorsSha256.Length);
        Assert.Equal([0.1f, 0.2f, 0.3f, 0.4f], tensors.Get("w.momentum_buffer").ToFloatArray());
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, CheckpointStore.MetadataFileName)))!;
        Assert.Equal(1, (int)json["format_version"]!);
        Assert.Equal("sgd", (string)json["optimizer"]!["kind"]!);
    }

    [Fact]
    public void Corrupt_or_inconsistent_checkpoints_are_refused()
    {
        using var dir = new TempDirectory();
        CheckpointStore.Save(dir.Path, Meta(), Tensors());
        var metaPath = Path.Combine(dir.Path, CheckpointStore.MetadataFileName);
        var good = File.ReadAllText(metaPath);

        File.WriteAllText(metaPath, good[..(good.Length / 2)]);
        Assert.Contains("not valid checkpoint JSON", Assert.Throws<CheckpointFormatException>(() => CheckpointStore.Load(dir.Path)).Message);

        File.WriteAllText(metaPath, good.Replace("\"format_version\": 1", "\"format_version\": 9"));
        Assert.Contains("format_version 9", Assert.Throws<CheckpointFormatException>(() => CheckpointStore.Load(dir.Path)).Message);

        var node = JsonNode.Parse(good)!;
        node["parameters"]!.AsArray().Add(new JsonObject { ["name"] = "v", ["element_type"] = "float", ["shape"] = new JsonArray(3) });
        File.WriteAllText(metaPath, node.ToJsonString());
        Assert.Contains("'v'", Assert.Throws<CheckpointFormatException>(() => CheckpointStore.Load(dir.Path)).Message);

        File.WriteAllText(metaPath, good);
        File.Delete(Path.Combine(dir.Path, CheckpointStore.TensorsFileName));
        Assert.Contains(CheckpointStore.TensorsFileName, Assert.Throws<CheckpointFormatException>(() => CheckpointStore.Load(dir.Path)).Message);
    }
}
