using Microsoft.Extensions.Logging.Abstractions;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests;

public sealed class FeedbackWriterTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly SqliteFeedbackStore _store;
    private readonly OnnxTuneMetrics _metrics = new(null);

    public FeedbackWriterTests() => _store = new SqliteFeedbackStore(_dir.Sub("fb.db"));

    public void Dispose()
    {
        _store.Dispose();
        _metrics.Dispose();
        _dir.Dispose();
    }

    private FeedbackWriter Writer(IList<string>? labels = null, int maxText = 20, bool textModel = false)
    {
        // Text feedback is accepted only by models whose artifacts record a tokenizer.
        TestModels.WriteArtifacts(_dir.Sub("art"), properties: textModel ? new Dictionary<string, string> { ["onnxtune.tokenizer.vocab"] = "vocab.txt" } : null);
        if (textModel) File.WriteAllLines(Path.Combine(_dir.Sub("art"), "vocab.txt"), ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]);
        var options = new OnDeviceFineTuningOptions { Labels = labels, MaxTextLength = maxText };
        return new FeedbackWriter("m", new FeedbackSchema(ArtifactManifest.Load(_dir.Sub("art")), options), _store, 0.1, TimeProvider.System, _metrics, NullLogger.Instance);
    }

    private static Dictionary<string, TensorData> X(params float[] v) => new() { ["x"] = TensorData.Float(v, 1, v.Length) };

    private static async Task<FeedbackValidationException> Rejects(FeedbackWriter w, Feedback f) =>
        await Assert.ThrowsAsync<FeedbackValidationException>(() => w.WriteAsync(f).AsTask());

    [Fact]
    public async Task Invalid_records_get_typed_errors_and_nothing_is_stored()
    {
        var w = Writer(["weather", "music", "alarm"]);
        Assert.Equal(FeedbackErrorKind.UnknownLabel, (await Rejects(w, Feedback.ForTensors(X(1, 2, 3, 4), "cooking"))).Kind);
        Assert.Equal(FeedbackErrorKind.UnknownLabel, (await Rejects(w, Feedback.ForTensors(X(1, 2, 3, 4), 3))).Kind);
        Assert.Equal(FeedbackErrorKind.UnknownLabel, (await Rejects(w, Feedback.ForTensors(X(1, 2, 3, 4), -1))).Kind);
        var shape = await Rejects(w, Feedback.ForTensors(X(1, 2, 3), 0));
        Assert.Equal(FeedbackErrorKind.ShapeMismatch, shape.Kind);
        Assert.Equal("Tensors[x]", shape.Field);
        Assert.Contains("[batch,4]", shape.Message, StringComparison.Ordinal);
        var nan = await Rejects(w, Feedback.ForTensors(X(1, float.NaN, 3, 4), 0));
        Assert.Equal(FeedbackErrorKind.NonFiniteValue, nan.Kind);
        Assert.Contains("flat index 1", nan.Message, StringComparison.Ordinal);
        Assert.Equal(FeedbackErrorKind.TypeMismatch, (await Rejects(w, Feedback.ForTensors(new Dictionary<string, TensorData> { ["x"] = TensorData.Int64([1, 2, 3, 4], 1, 4) }, 0))).Kind);
        Assert.Equal(FeedbackErrorKind.UnknownInput, (await Rejects(w, Feedback.ForTensors(new Dictionary<string, TensorData> { ["x"] = TensorData.Float([1, 2, 3, 4], 1, 4), ["z"] = TensorData.Float([1], 1) }, 0))).Kind);
        Assert.Equal(FeedbackErrorKind.MissingInput, (await Rejects(w, Feedback.ForTensors(new Dictionary<string, TensorData>(), 0))).Kind);
        Assert.Equal(FeedbackErrorKind.TextTooLong, (await Rejects(w, Feedback.ForText(new string('a', 21), 0))).Kind);
        Assert.Equal(FeedbackErrorKind.EmptyText, (await Rejects(w, Feedback.ForText("   ", 0))).Kind);
        Assert.Equal(FeedbackErrorKind.MissingInput, (await Rejects(w, new Feedback { Label = 0 })).Kind);
        Assert.Equal(FeedbackErrorKind.InvalidWeight, (await Rejects(w, Feedback.ForTensors(X(1, 2, 3, 4), 0) with { Weight = -1 })).Kind);
        Assert.Equal(FeedbackErrorKind.NonFiniteValue, (await Rejects(w, Feedback.ForTensors(X(1, 2, 3, 4), 0) with { Weight = float.PositiveInfinity })).Kind);
        Assert.Equal(0, await _store.GetLatestSequenceAsync());
    }

    [Fact]
    public async Task The_same_input_always_lands_on_the_same_side_whatever_its_label()
    {
        // Held-out membership follows the input, so a retried or re-labelled input never trains and validates at once.
        var w = Writer(["weather", "music", "alarm"], textModel: true);
        var sides = new List<bool>();
        for (var i = 0; i < 60; i++)
        {
            var first = await w.WriteAsync(Feedback.ForTensors(X(i, 1, 2, 3), "music"));
            var again = await w.WriteAsync(Feedback.ForTensors(X(i, 1, 2, 3), "alarm", "another-user"));
            Assert.NotEqual(first.Id, again.Id);
            Assert.Equal(first.HeldOut, again.HeldOut);
            sides.Add(first.HeldOut);
        }
        // Different inputs still split at about the configured share (0.1): some held out, most not.
        Assert.InRange(sides.Count(h => h), 1, 20);
        var text1 = await w.WriteAsync(Feedback.ForText("wake me at 7", 2));
        var text2 = await w.WriteAsync(Feedback.ForText("wake me at 7", 0));
        Assert.Equal(text1.HeldOut, text2.HeldOut);
        Assert.NotEqual(HeldOutAssignment.InputKey("wake me at 7", null), HeldOutAssignment.InputKey("wake me at 8", null));
        Assert.NotEqual(HeldOutAssignment.InputKey(null, X(1, 2, 3, 4)), HeldOutAssignment.InputKey(null, X(1, 2, 3, 5)));
    }

    [Fact]
    public async Task Valid_records_are_stored_with_resolved_labels_and_a_stable_held_out_flag()
    {
        var w = Writer(["weather", "music", "alarm"], textModel: true);
        var r1 = await w.WriteAsync(Feedback.ForTensors(X(1, 2, 3, 4), "music", "u") with { Metadata = new Dictionary<string, string> { ["k"] = "v" }, Weight = 2 });
        var r2 = await w.WriteAsync(Feedback.ForText("wake me at 7", 2));
        var secret = Convert.FromHexString((await _store.GetStateAsync(HeldOutSecret.StateKey))!);
        Assert.Equal(HeldOutAssignment.IsHeldOut(HeldOutAssignment.InputKey(null, X(1, 2, 3, 4)), secret, 0.1), r1.HeldOut);
        var all = (await _store.GetTrainingSinceAsync(0, 10)).Concat(await _store.GetHeldOutAsync(10)).OrderBy(r => r.Sequence).ToList();
        Assert.Equal([r1.Id, r2.Id], all.Select(r => r.Id));
        Assert.Equal((1L, "music"), (all[0].LabelIndex, all[0].LabelName));
        Assert.Equal((2L, "alarm"), (all[1].LabelIndex, all[1].LabelName));
        Assert.Equal(2f, all[0].Weight);
        Assert.Equal("v", all[0].Metadata!["k"]);
    }

    [Fact]
    public async Task Without_a_label_list_indices_are_checked_against_the_output_width_and_names_are_refused()
    {
        var w = Writer();
        await w.WriteAsync(Feedback.ForTensors(X(1, 2, 3, 4), 2));
        Assert.Equal(FeedbackErrorKind.UnknownLabel, (await Rejects(w, Feedback.ForTensors(X(1, 2, 3, 4), 3))).Kind);
        Assert.Contains("no label list", (await Rejects(w, Feedback.ForTensors(X(1, 2, 3, 4), "music"))).Message, StringComparison.Ordinal);
    }
}
