using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.Data;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Cli.Tests;

/// <summary>BatchSampler and TensorDataFile (src/OnnxTune.Training/Data), and shuffling through <c>train</c>.</summary>
public sealed class DataTests
{
    [Fact]
    public void In_order_batches_keep_the_last_partial_batch_like_DataLoader()
    {
        var s = new BatchSampler(37, 8);
        var epoch = s.NextEpoch();
        Assert.Equal([8, 8, 8, 8, 5], epoch.Select(b => b.Length));
        Assert.Equal(Enumerable.Range(0, 37), epoch.SelectMany(b => b));
        Assert.Equal(epoch.SelectMany(b => b), s.NextEpoch().SelectMany(b => b));
        Assert.Equal([8, 8, 8, 8], new BatchSampler(37, 8, dropLast: true).NextEpoch().Select(b => b.Length));
        Assert.Equal(4, new BatchSampler(37, 8, dropLast: true).BatchesPerEpoch);
    }

    [Fact]
    public void Shuffled_epochs_are_seeded_permutations_that_differ_between_epochs()
    {
        var a = new BatchSampler(100, 16, shuffle: true, seed: 5);
        var b = new BatchSampler(100, 16, shuffle: true, seed: 5);
        var a1 = a.NextEpoch().SelectMany(x => x).ToArray();
        var a2 = a.NextEpoch().SelectMany(x => x).ToArray();
        Assert.Equal(a1, b.NextEpoch().SelectMany(x => x));
        Assert.Equal(Enumerable.Range(0, 100), a1.Order());
        Assert.Equal(Enumerable.Range(0, 100), a2.Order());
        Assert.NotEqual(a1, a2);
        Assert.NotEqual(a1, new BatchSampler(100, 16, shuffle: true, seed: 6).NextEpoch().SelectMany(x => x));
        Assert.NotEqual(Enumerable.Range(0, 100), a1);
    }

    [Fact]
    public void Batches_gather_the_requested_rows_of_every_tensor()
    {
        var file = new SafeTensorsFile(
        [
            SafeTensor.FromFloats("x", Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), 4, 3),
            SafeTensor.FromBools("mask", [true, false, true, false], 4, 1),
            SafeTensor.FromInt64s("labels", [10, 11, 12, 13], 4),
            SafeTensor.FromFloats("unused", [1f], 1),
        ]);
        var data = TensorDataFile.FromFile(file, "mem", ["x", "mask"], "labels");
        Assert.Equal(4, data.SampleCount);
        var batch = data.CreateBatch([3, 1]);
        Assert.Equal([2L, 3], batch.Inputs["x"].Shape);
        Assert.Equal([2L, 1], batch.Inputs["mask"].Shape);
        Assert.Equal([2L], batch.Labels!.Shape);
        Assert.Throws<ArgumentOutOfRangeException>(() => data.CreateBatch([4]));
        Assert.Throws<DataFileException>(() => TensorDataFile.FromFile(file, "mem", ["x", "unused"], null));
        var missing = Assert.Throws<DataFileException>(() => TensorDataFile.FromFile(file, "mem", ["y"], "labels"));
        Assert.Equal("y", missing.TensorName);
        var boolLabels = Assert.Throws<DataFileException>(() => TensorDataFile.FromFile(file, "mem", ["x"], "mask"));
        Assert.Contains("BOOL", boolLabels.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Train_shuffles_by_seed_and_is_repeatable()
    {
        var c = ParityCase.Load("b_mlp_ce_adamw");
        using var dir = new TempDir().CopyFrom(c.Folder);
        CliRunner.Run(dir.Path, c.Command("artifacts")).Expect(0);
        float[] Train(string outDir, params string[] extra)
        {
            CliRunner.Run(dir.Path, ["train", "artifacts", "--data", "data.safetensors", "--out", outDir, "--epochs", "2", "--batch-size", "8", .. extra]).Expect(0);
            return CheckpointStore.Load(Path.Combine(dir.Path, outDir, "checkpoint")).Tensors.Get("fc1.weight").ToFloatArray();
        }
        var seed3 = Train("s3", "--seed", "3");
        Assert.Equal(seed3, Train("s3b", "--seed", "3"));
        Assert.NotEqual(seed3, Train("s4", "--seed", "4"));
        Assert.NotEqual(seed3, Train("ordered", "--no-shuffle"));
    }
}
