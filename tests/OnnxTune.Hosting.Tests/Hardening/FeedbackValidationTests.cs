using Microsoft.Extensions.Logging.Abstractions;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests.Hardening;

/// <summary>Records the engine could not train on are rejected on write, with a typed kind naming the field.</summary>
public sealed class FeedbackValidationTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly SqliteFeedbackStore _store;
    private readonly OnnxTuneMetrics _metrics = new(null);

    public FeedbackValidationTests() => _store = new SqliteFeedbackStore(_dir.Sub("fb.db"));

    public void Dispose()
    {
        _store.Dispose();
        _metrics.Dispose();
        _dir.Dispose();
    }

    private FeedbackWriter Writer(ArtifactManifest manifest, Action<OnDeviceFineTuningOptions>? configure = null)
    {
        var options = new OnDeviceFineTuningOptions { ArtifactsPath = _dir.Sub("art"), Labels = ["a", "b", "c"] };
        configure?.Invoke(options);
        return new FeedbackWriter("m", new FeedbackSchema(manifest, options), _store, 0.1, TimeProvider.System, _metrics, NullLogger.Instance);
    }

    private FeedbackWriter TensorWriter(Action<OnDeviceFineTuningOptions>? configure = null) =>
        Writer(ArtifactManifest.Load(TestModels.WriteArtifacts(_dir.Sub("art"))), configure);

    private FeedbackWriter TextWriter()
    {
        var art = Directory.CreateDirectory(_dir.Sub("art")).FullName;
        File.WriteAllLines(Path.Combine(art, "vocab.txt"), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "a", "b", "c", "d"]);
        var manifest = new ArtifactManifest
        {
            Inputs = [new TensorSpec("input_ids", "int64", ["batch", "sequence"]), new TensorSpec("attention_mask", "int64", ["batch", "sequence"])],
            Outputs = [new TensorSpec("logits", "float", ["batch", "3"])],
            Loss = new LossSpec { OutputName = "logits", LabelElementType = "int64" },
            Opset = 17,
            Properties = new Dictionary<string, string> { ["onnxtune.tokenizer.vocab"] = "vocab.txt", ["onnxtune.tokenizer.max_length"] = "8" },
        };
        return Writer(manifest);
    }

    private static async Task<FeedbackValidationException> Rejects(FeedbackWriter w, Feedback f) =>
        await Assert.ThrowsAsync<FeedbackValidationException>(() => w.WriteAsync(f).AsTask());

    private static Dictionary<string, TensorData> X(TensorData t) => new() { ["x"] = t };

    [Fact]
    public async Task Tensor_records_the_engine_cannot_train_on_are_rejected_with_typed_kinds()
    {
        var w = TensorWriter(o => o.MaxFeedbackTensorElements = 4);
        var batch2 = await Rejects(w, Feedback.ForTensors(X(TensorData.Float(new float[8], 2, 4)), 0));
        Assert.Equal((FeedbackErrorKind.ShapeMismatch, "Tensors[x]"), (batch2.Kind, batch2.Field));
        Assert.Contains("leading (batch) dim must be 1", batch2.Message, StringComparison.Ordinal);
        var huge = await Rejects(w, Feedback.ForTensors(X(TensorData.Float([1, -3e38f, 0, 0], 1, 4)), 0));
        Assert.Equal(FeedbackErrorKind.ValueOutOfRange, huge.Kind);
        Assert.Contains("flat index 1", huge.Message, StringComparison.Ordinal);
        Assert.Equal(FeedbackErrorKind.TextNotSupported, (await Rejects(w, Feedback.ForText("hello", 0))).Kind);
        await w.WriteAsync(Feedback.ForTensors(X(TensorData.Float([1, -1e6f, 0, 0], 1, 4)), 0)); // at the bound
        Assert.Equal(1, await _store.GetLatestSequenceAsync());

        var small = TensorWriter(o => o.MaxFeedbackTensorElements = 3);
        Assert.Equal(FeedbackErrorKind.TooLarge, (await Rejects(small, Feedback.ForTensors(X(TensorData.Float(new float[4], 1, 4)), 0))).Kind);
        var tight = TensorWriter(o => o.MaxFeedbackValue = 10);
        Assert.Equal(FeedbackErrorKind.ValueOutOfRange, (await Rejects(tight, Feedback.ForTensors(X(TensorData.Float([0, 0, 11, 0], 1, 4)), 0))).Kind);
    }

    [Fact]
    public async Task Text_model_tensors_need_token_ids_in_the_vocabulary_binary_masks_and_at_most_max_length_positions()
    {
        var w = TextWriter();
        Dictionary<string, TensorData> Ids(long[] ids, long[]? mask = null) => new()
        {
            ["input_ids"] = TensorData.Int64(ids, 1, ids.Length),
            ["attention_mask"] = TensorData.Int64(mask ?? ids.Select(_ => 1L).ToArray(), 1, ids.Length),
        };
        await w.WriteAsync(Feedback.ForTensors(Ids([2, 4, 5, 3]), "a"));
        await w.WriteAsync(Feedback.ForText("hello world", "b"));
        var oov = await Rejects(w, Feedback.ForTensors(Ids([2, 10, 3]), "a"));
        Assert.Equal((FeedbackErrorKind.ValueOutOfRange, "Tensors[input_ids]"), (oov.Kind, oov.Field));
        Assert.Contains("10-token vocabulary", oov.Message, StringComparison.Ordinal);
        Assert.Equal(FeedbackErrorKind.ValueOutOfRange, (await Rejects(w, Feedback.ForTensors(Ids([2, -1, 3]), "a"))).Kind);
        var mask = await Rejects(w, Feedback.ForTensors(Ids([2, 4, 3], [1, 2, 1]), "a"));
        Assert.Equal((FeedbackErrorKind.ValueOutOfRange, "Tensors[attention_mask]"), (mask.Kind, mask.Field));
        Assert.Equal(FeedbackErrorKind.TooLarge, (await Rejects(w, Feedback.ForTensors(Ids(new long[9]), "a"))).Kind);
        Assert.Equal(2, await _store.GetLatestSequenceAsync());
    }
}
