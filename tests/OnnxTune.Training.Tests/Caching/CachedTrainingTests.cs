using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.Models;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Caching;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Caching;

public sealed class CachedTrainingTests
{
    private const int Epochs = 5;

    private static readonly string[] Trainable = ["fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"];

    [Fact]
    public void Training_on_cached_activations_matches_training_the_full_model()
    {
        var model = Mlp();
        var examples = Examples(24, seed: 1);
        var batches = ExampleBatches.Create(examples, batchSize: 6);
        using var dir = new TempDirectory();
        var options = new ArtifactOptions
        {
            Selection = new ParameterSelection { Trainable = ["fc2.*", "fc3.*"] },
            Loss = new LossSpec { Kind = LossKind.CrossEntropy },
            Optimizer = new OptimizerSpec { LearningRate = 0.05 },
        };

        GeneratedArtifacts.Create(model, options, dir.Combine("full"));
        var expected = new List<float>();
        using (var full = TrainingEngine.Open(dir.Combine("full")))
            for (var epoch = 0; epoch < Epochs; epoch++)
                foreach (var batch in batches)
                {
                    expected.Add(full.TrainStep(ExampleBatches.Stack(batch)));
                    full.OptimizerStep();
                }

        var split = FrozenPrefixSplitter.Split(model, Trainable);
        GeneratedArtifacts.Create(split.Suffix, options, dir.Combine("suffix"));
        var actual = new List<float>();
        using var cache = new ActivationCache(split);
        using (var suffix = TrainingEngine.Open(dir.Combine("suffix")))
        {
            var trainer = new CachedTrainer(suffix, cache);
            for (var epoch = 0; epoch < Epochs; epoch++)
            {
                var result = trainer.TrainEpoch(batches);
                Assert.Equal(epoch == 0 ? 24 : 0, result.Cache.Computed);
                Assert.Equal(4, result.OptimizerSteps);
                actual.AddRange(result.Losses);
            }
        }

        Assert.Equal(expected.Count, actual.Count);
        var firstEpoch = expected.Take(4).Average();
        var lastEpoch = expected.TakeLast(4).Average();
        Assert.True(lastEpoch < firstEpoch * 0.9f, $"training should lower the loss: {firstEpoch} → {lastEpoch}");
        for (var i = 0; i < expected.Count; i++)
            Assert.True(MathF.Abs(expected[i] - actual[i]) <= 1e-5f, $"step {i}: full {expected[i]}, cached {actual[i]}");
    }

    [Fact]
    public void Batches_stacked_into_reused_buffers_equal_fresh_ones_and_reuse_the_memory()
    {
        static TrainingExample Example(int i, int width) => new($"e{i}",
            [
                SafeTensor.FromFloats("h", Enumerable.Range(0, width * 3).Select(k => i * 100f + k).ToArray(), width, 3),
                SafeTensor.FromInt64s("mask", Enumerable.Range(0, width).Select(k => (long)(k + i)).ToArray(), width),
                SafeTensor.FromBools("keep", Enumerable.Range(0, width).Select(k => (k + i) % 2 == 0).ToArray(), width),
            ], SafeTensor.FromInt64s("labels", [i % 3]));
        var buffers = new BatchStackBuffers();
        var first = ExampleBatches.Stack([Example(0, 4), Example(1, 4), Example(2, 4)], buffers);
        var firstH = first.Inputs["h"].Floats.ToArray();
        var wide = ExampleBatches.Stack([Example(3, 6), Example(4, 6)], buffers); // longer: the buffers grow
        var narrow = new[] { Example(5, 2), Example(6, 2) };
        var reused = ExampleBatches.Stack(narrow, buffers);
        var fresh = ExampleBatches.Stack(narrow);

        Assert.Equal(new long[] { 3, 4, 3 }, first.Inputs["h"].Shape);
        Assert.Equal(Enumerable.Range(0, 12).Select(k => (float)k).Concat(Enumerable.Range(0, 12).Select(k => 100f + k)).Concat(Enumerable.Range(0, 12).Select(k => 200f + k)), firstH);
        Assert.Equal(36, wide.Inputs["h"].Length);
        foreach (var name in new[] { "h", "mask", "keep" })
        {
            Assert.Equal(fresh.Inputs[name].Shape, reused.Inputs[name].Shape);
            Assert.Equal(fresh.Inputs[name].Length, reused.Inputs[name].Length);
        }
        Assert.Equal(fresh.Inputs["h"].Floats.ToArray(), reused.Inputs["h"].Floats.ToArray());
        Assert.Equal(fresh.Inputs["mask"].Int64s.ToArray(), reused.Inputs["mask"].Int64s.ToArray());
        Assert.Equal(((Memory<bool>)fresh.Inputs["keep"].Memory).ToArray(), ((Memory<bool>)reused.Inputs["keep"].Memory).ToArray());
        Assert.Equal(fresh.Labels!.Int64s.ToArray(), reused.Labels!.Int64s.ToArray());
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<float>((Memory<float>)wide.Inputs["h"].Memory, out var wideArray));
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<float>((Memory<float>)reused.Inputs["h"].Memory, out var reusedArray));
        Assert.Same(wideArray.Array, reusedArray.Array);
    }

    [Fact]
    public void Cache_file_round_trips_and_is_reused_by_a_later_round()
    {
        var split = FrozenPrefixSplitter.Split(Mlp(), Trainable);
        var examples = Examples(10, seed: 2);
        using var dir = new TempDirectory();
        var options = new ActivationCacheOptions { FilePath = dir.Combine("cache", "activations.safetensors"), BatchSize = 4 };

        Dictionary<string, float[]> first;
        using (var cache = new ActivationCache(split, options))
        {
            var build = cache.Build(examples);
            Assert.Equal((10, 0, 3), (build.Computed, build.Reused, build.PrefixRuns));
            Assert.True(File.Exists(options.FilePath));
            first = examples.ToDictionary(e => e.Id, e => cache.Get(e.Id).Single().ToFloatArray());
            Assert.Equal(10 * 8 * 4, cache.Bytes);
        }

        split.Save(dir.Combine("split"));
        using (var again = ActivationCache.Open(dir.Combine("split"), options))
        {
            Assert.Equal(split.Manifest.PrefixSha256, again.PrefixSha256);
            Assert.Equal(10, again.LoadedFromFile);
            Assert.False(again.FileWasStale);
            var build = again.Build(examples);
            Assert.Equal((0, 10, 0), (build.Computed, build.Reused, build.PrefixRuns));
            foreach (var e in examples)
            {
                var t = again.Get(e.Id).Single();
                Assert.Equal("act1_out", t.Name);
                Assert.Equal([8L], t.Shape);
                Assert.Equal(first[e.Id], t.ToFloatArray());
            }

            // An example whose inputs changed under the same id is recomputed.
            var changed = examples[3] with { Inputs = [SafeTensor.FromFloats("features", [9f, 9f, 9f, 9f], 4)] };
            Assert.False(again.Contains(changed));
            Assert.Equal(1, again.Build([changed]).Computed);
            Assert.NotEqual(first[changed.Id], again.Get(changed.Id).Single().ToFloatArray());
        }
    }

    [Fact]
    public void The_prefix_session_is_released_after_each_build_unless_kept()
    {
        var split = FrozenPrefixSplitter.Split(Mlp(), Trainable);
        var examples = Examples(10, seed: 3);
        using var cache = new ActivationCache(split, new ActivationCacheOptions { BatchSize = 4 });
        Assert.Equal(6, cache.Build(examples.Take(6)).Computed);
        Assert.False(cache.PrefixSessionOpen);
        var firstSix = examples.Take(6).ToDictionary(e => e.Id, e => cache.Get(e.Id).Single().ToFloatArray());
        // A later build with new examples opens the session again; what was cached stays as it was.
        var second = cache.Build(examples);
        Assert.Equal((4, 6), (second.Computed, second.Reused));
        Assert.False(cache.PrefixSessionOpen);
        foreach (var (id, values) in firstSix) Assert.Equal(values, cache.Get(id).Single().ToFloatArray());

        using var keeping = new ActivationCache(split, new ActivationCacheOptions { BatchSize = 4, KeepPrefixSession = true });
        keeping.Build(examples);
        Assert.True(keeping.PrefixSessionOpen);
        foreach (var e in examples) Assert.Equal(cache.Get(e.Id).Single().ToFloatArray(), keeping.Get(e.Id).Single().ToFloatArray());
    }

    [Fact]
    public void Cache_file_of_another_prefix_is_ignored_and_replaced()
    {
        var model = Mlp();
        var examples = Examples(6, seed: 3);
        using var dir = new TempDirectory();
        var options = new ActivationCacheOptions { FilePath = dir.Combine("activations.safetensors") };
        var split = FrozenPrefixSplitter.Split(model, Trainable);
        float[] before;
        using (var cache = new ActivationCache(split, options))
        {
            cache.Build(examples);
            before = cache.Get(examples[0].Id).Single().ToFloatArray();
        }

        // New frozen weights (e.g. a model update between rounds) change the prefix hash.
        var updated = model.Clone();
        var w = updated.Graph.Initializer.First(t => t.Name == "fc1.weight");
        var values = TensorProtos.ToFloatArray(w).Select(v => v * 2f).ToArray();
        updated.Graph.Initializer[updated.Graph.Initializer.IndexOf(w)] = TensorProtos.Float("fc1.weight", values, [.. w.Dims]);
        var split2 = FrozenPrefixSplitter.Split(updated, Trainable);
        Assert.NotEqual(split.Manifest.PrefixSha256, split2.Manifest.PrefixSha256);
        using (var cache = new ActivationCache(split2, options))
        {
            Assert.True(cache.FileWasStale);
            Assert.Equal(0, cache.LoadedFromFile);
            Assert.Equal(6, cache.Build(examples).Computed);
            Assert.NotEqual(before, cache.Get(examples[0].Id).Single().ToFloatArray());
        }
        using (var reopened = new ActivationCache(split2, options))
            Assert.Equal(6, reopened.LoadedFromFile);
        var meta = SafeTensorsFile.Read(options.FilePath!).Metadata;
        Assert.Equal(split2.Manifest.PrefixSha256, meta["prefix_sha256"]);
    }

    [Fact]
    public void Misuse_fails_with_messages_naming_the_example_or_tensor()
    {
        var split = FrozenPrefixSplitter.Split(Mlp(), Trainable);
        using var cache = new ActivationCache(split);
        var missing = Assert.Throws<ActivationCacheException>(() => cache.Get("nope"));
        Assert.Contains("'nope'", missing.Message, StringComparison.Ordinal);
        var noInput = new TrainingExample("bad", [SafeTensor.FromFloats("other", [1f], 1)]);
        Assert.Contains("features", Assert.Throws<ActivationCacheException>(() => cache.Build([noInput])).Message, StringComparison.Ordinal);
        var dup = Examples(2, seed: 4);
        Assert.Contains("twice", Assert.Throws<ActivationCacheException>(() => cache.Build([dup[0], dup[0]])).Message, StringComparison.Ordinal);
        var mixed = new[] { Example("a", 4, 1), Example("b", 5, 1) };
        Assert.Contains("cannot share a batch", Assert.Throws<ActivationCacheException>(() => ExampleBatches.Stack(mixed)).Message, StringComparison.Ordinal);
    }

    internal static ModelProto Mlp() => new MlpModelBuilder(4).Layer(8).Layer(8).Layer(3).Build(seed: 7);

    internal static List<TrainingExample> Examples(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(i =>
        {
            var x = Enumerable.Range(0, 4).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var label = x[0] + x[1] > 0 ? 0L : x[2] > 0 ? 1L : 2L;
            return new TrainingExample($"ex{i}", [SafeTensor.FromFloats("features", x, 4)], SafeTensor.FromInt64s("labels", [label]));
        }).ToList();
    }

    private static TrainingExample Example(string id, int width, long label) =>
        new(id, [SafeTensor.FromFloats("features", new float[width], width)], SafeTensor.FromInt64s("labels", [label]));
}
