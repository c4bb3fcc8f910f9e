using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;
using OnnxTune.Training.Caching;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Training.Tests.Caching;

/// <summary>Frozen-prefix split of the real all-MiniLM-L6-v2 with the top two layers and the pooler trainable.</summary>
public sealed class MiniLmPrefixSplitTests
{
    // The exporter names the MatMul weights by number; these are the six of layer 4 and the six of layer 5.
    internal static readonly string[] TopLayerMatMulWeights = ["979", "980", "983", "989", "990", "991", "992", "993", "996", "1002", "1003", "1004"];

    private static readonly string[] Sentences =
    [
        "how do i reset my online banking password",
        "play some jazz",
        "what is the exchange rate between dollars and euros right now",
        "book a table for two at an italian restaurant tonight",
    ];

    internal static List<string> TopTwoLayersAndPooler(ModelProto model) =>
        model.Graph.Initializer.Select(t => t.Name)
            .Where(n => n.StartsWith("encoder.layer.4.", StringComparison.Ordinal) || n.StartsWith("encoder.layer.5.", StringComparison.Ordinal)
                || n.StartsWith("pooler.", StringComparison.Ordinal) || TopLayerMatMulWeights.Contains(n))
            .ToList();

    [Fact]
    public void Splits_after_layer_3_and_prefix_then_suffix_equals_the_full_model()
    {
        var files = MiniLmModel.Extract(Path.Combine(AppContext.BaseDirectory, "minilm-cache"));
        var model = OnnxModelReader.Load(files.ModelPath);
        var trainable = TopTwoLayersAndPooler(model);
        Assert.True(trainable.Count >= 12 + 16, $"only {trainable.Count} trainable parameters were selected");

        var split = FrozenPrefixSplitter.Split(model, trainable);
        var frontier = string.Join(", ", split.Manifest.Frontier.Select(f => $"{f.Name}:{f.ElementType}[{string.Join(",", f.Shape)}]"));

        // Layers 0-3 (and the embeddings) are in the prefix, layers 4-5 only in the suffix.
        var prefixParams = split.Prefix.Graph.Initializer.Select(t => t.Name).ToList();
        Assert.Contains(prefixParams, n => n.StartsWith("encoder.layer.3.", StringComparison.Ordinal));
        Assert.DoesNotContain(prefixParams, n => n.StartsWith("encoder.layer.4.", StringComparison.Ordinal) || trainable.Contains(n));
        var suffixLayers = split.Suffix.Graph.Initializer.Select(t => Regex.Match(t.Name, @"^encoder\.layer\.(\d)\.")).Where(m => m.Success).Select(m => m.Groups[1].Value).Distinct().Order().ToList();
        Assert.Equal(["4", "5"], suffixLayers);
        // The frontier: the hidden state after layer 3 (float [batch, seq, 384]) and the additive attention mask.
        var hidden = split.Manifest.Frontier.Where(f => f.ElementType == "float" && f.Shape.Count == 3 && f.Shape[2] == "384").ToList();
        Assert.True(hidden.Count == 1, $"frontier: {frontier}");
        Assert.True(split.Manifest.Frontier.Count <= 3, $"frontier: {frontier}");

        var encoder = BertTextEncoder.FromVocabulary(files.VocabularyPath);
        var batch = encoder.EncodeBatch(Sentences);
        var inputs = new Dictionary<string, long[]>
        {
            [BertInputNames.InputIds] = batch.InputIds,
            [BertInputNames.AttentionMask] = batch.AttentionMask,
            [BertInputNames.TokenTypeIds] = batch.TokenTypeIds,
        };
        var full = Run(OnnxModelWriter.ToBytes(model), inputs.ToDictionary(kv => kv.Key, kv => (Array)kv.Value), batch.Shape);

        // Through the cache: per-example activations, then a stacked suffix batch.
        var examples = Enumerable.Range(0, Sentences.Length).Select(i => new TrainingExample($"s{i}",
            inputs.Select(kv => SafeTensor.FromInt64s(kv.Key, kv.Value.AsSpan(i * batch.SequenceLength, batch.SequenceLength), batch.SequenceLength)).ToList())).ToList();
        using var cache = new ActivationCache(split, new ActivationCacheOptions { BatchSize = 2 });
        Assert.Equal(2, cache.Build(examples).PrefixRuns);
        var suffixInputs = new Dictionary<string, Array>();
        var shapes = new Dictionary<string, long[]>();
        var stacked = cache.CreateBatch(examples);
        foreach (var (name, t) in stacked.Inputs)
        {
            suffixInputs[name] = t.ElementType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float ? ((Memory<float>)t.Memory).ToArray() : ((Memory<long>)t.Memory).ToArray();
            shapes[name] = t.Shape;
        }
        var composed = Run(OnnxModelWriter.ToBytes(split.Suffix), suffixInputs, null, shapes);

        foreach (var (name, expected) in full)
        {
            var actual = composed[name];
            Assert.Equal(expected.Length, actual.Length);
            var maxDiff = expected.Zip(actual).Max(p => MathF.Abs(p.First - p.Second));
            Assert.True(maxDiff <= 1e-4f, $"{name}: max |full - suffix(prefix)| = {maxDiff}; frontier: {frontier}");
        }
    }

    private static Dictionary<string, float[]> Run(byte[] model, Dictionary<string, Array> inputs, long[]? shape, Dictionary<string, long[]>? shapes = null)
    {
        using var session = new InferenceSession(model);
        var names = inputs.Keys.ToList();
        var values = names.Select(n => inputs[n] switch
        {
            float[] f => OrtValue.CreateTensorValueFromMemory(f, shapes?[n] ?? shape!),
            long[] l => OrtValue.CreateTensorValueFromMemory(l, shapes?[n] ?? shape!),
            _ => throw new ArgumentException(n),
        }).ToList();
        try
        {
            using var outputs = session.Run(new RunOptions(), names, values, session.OutputNames);
            return session.OutputNames.Zip(outputs).ToDictionary(p => p.First, p => p.Second.GetTensorDataAsSpan<float>().ToArray());
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }
}
