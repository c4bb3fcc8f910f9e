using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Caching;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Tests.TestUtilities;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Training.Tests.Caching;

/// <summary>A sequence model with a padding mask, trained on examples of two padded lengths.</summary>
public sealed class LengthBucketTrainingTests
{
    [Fact]
    public void Cached_training_over_length_buckets_matches_full_training()
    {
        var model = SequenceModel();
        var examples = Examples();
        var batches = ExampleBatches.Create(examples, batchSize: 4, seed: 11);
        Assert.Contains(batches, b => b[0].Inputs[0].Shape[0] == 3);
        Assert.Contains(batches, b => b[0].Inputs[0].Shape[0] == 5);
        var options = new ArtifactOptions
        {
            Selection = new ParameterSelection { Trainable = ["proj.weight", "out.weight"] },
            Loss = new LossSpec { Kind = LossKind.Mse },
            Optimizer = new OptimizerSpec { LearningRate = 0.01 },
        };
        using var dir = new TempDirectory();
        GeneratedArtifacts.Create(model, options, dir.Combine("full"));
        var expected = new List<float>();
        using (var full = TrainingEngine.Open(dir.Combine("full")))
            for (var epoch = 0; epoch < 3; epoch++)
                foreach (var batch in batches)
                {
                    expected.Add(full.TrainStep(ExampleBatches.Stack(batch)));
                    full.OptimizerStep();
                }

        var split = FrozenPrefixSplitter.Split(model, ["proj.weight", "out.weight"]);
        Assert.Contains(split.Manifest.Frontier, f => f.Name == "hidden");
        GeneratedArtifacts.Create(split.Suffix, options, dir.Combine("suffix"));
        using var cache = new ActivationCache(split, new ActivationCacheOptions { BatchSize = 3 });
        using var suffix = TrainingEngine.Open(dir.Combine("suffix"));
        var trainer = new CachedTrainer(suffix, cache);
        var actual = Enumerable.Range(0, 3).SelectMany(_ => trainer.TrainEpoch(batches).Losses).ToList();

        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++)
            Assert.True(MathF.Abs(expected[i] - actual[i]) <= 1e-5f, $"step {i}: full {expected[i]}, cached {actual[i]}");
        Assert.Equal(3, cache.Get("short-0")[0].Shape[0]);
    }

    /// <summary>y = masked mean over tokens of Tanh(Tanh(x W0) W1), then W2; W0 frozen, W1 and W2 trainable.</summary>
    private static ModelProto SequenceModel()
    {
        var model = new ModelProto { IrVersion = 8, Graph = new GraphProto { Name = "seq" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var e = new GraphEditor(model.Graph);
        e.Reserve("x");
        e.Reserve("mask");
        e.AddInput(ValueInfos.Tensor("x", DataType.Float, "batch", "seq", 4L));
        e.AddInput(ValueInfos.Tensor("mask", DataType.Int64, "batch", "seq"));
        var rng = new Random(3);
        string Param(string name, long rows, long cols) =>
            e.AddInitializer(TensorProtos.Float(name, Enumerable.Range(0, (int)(rows * cols)).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), rows, cols), makeUnique: false);
        var hidden = e.Reserve("hidden");
        e.AddNode("Tanh", [e.Add("MatMul", ["x", Param("embed.weight", 4, 4)], "embedded")], [hidden]);
        var z = e.Add("Tanh", [e.Add("MatMul", [hidden, Param("proj.weight", 4, 4)], "projected")], "z");
        var m3 = e.Add("Unsqueeze", [e.Add("Cast", ["mask"], "mask_float", Attr.Int("to", (long)DataType.Float)), e.ConstantInt64s("last", -1)], "mask3");
        var axis = e.ConstantInt64s("seq_axis", 1);
        var pooled = e.Add("Div", [e.Add("ReduceSum", [e.Add("Mul", [z, m3], "masked"), axis], "sum", Attr.Int("keepdims", 0)),
            e.Add("ReduceSum", [m3, axis], "count", Attr.Int("keepdims", 0))], "pooled");
        e.AddNode("MatMul", [pooled, Param("out.weight", 4, 2)], [e.Reserve("y")]);
        model.Graph.Output.Add(ValueInfos.Tensor("y", DataType.Float, "batch", 2L));
        return model;
    }

    private static List<TrainingExample> Examples()
    {
        var rng = new Random(5);
        var list = new List<TrainingExample>();
        foreach (var (prefix, padded, count) in new[] { ("short", 3, 7), ("long", 5, 6) })
            for (var i = 0; i < count; i++)
            {
                var length = rng.Next(1, padded + 1);
                var x = new float[padded * 4];
                var mask = new long[padded];
                for (var t = 0; t < length; t++)
                {
                    mask[t] = 1;
                    for (var k = 0; k < 4; k++) x[t * 4 + k] = (float)(rng.NextDouble() * 2 - 1);
                }
                var target = new[] { (float)rng.NextDouble(), (float)-rng.NextDouble() };
                list.Add(new TrainingExample($"{prefix}-{i}",
                    [SafeTensor.FromFloats("x", x, padded, 4), SafeTensor.FromInt64s("mask", mask, padded)],
                    SafeTensor.FromFloats("labels", target, 2)));
            }
        return list;
    }
}
