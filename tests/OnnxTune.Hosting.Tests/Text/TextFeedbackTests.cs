using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Hosting.Internal;
using OnnxTune.Text.Tokenization;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Tests.Text;

/// <summary>Text feedback end to end on real MiniLM: BERT encoding, a training round, the gate and text prediction.</summary>
[Collection(TextModelCollection.Name)]
public sealed class TextFeedbackTests(TextModelFixture model, ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private Task<Harness> StartAsync(Action<OnDeviceFineTuningOptions>? configure = null) => Harness.StartAsync(_dir, round: null, o =>
    {
        o.ArtifactsPath = model.ArtifactsPath;
        o.MinNewFeedback = 10;
        o.HeldOutShare = 0.3;
        o.MinHeldOutImprovement = 0;
        o.GoldenSetPath = model.GoldenSetPath;
        o.EpochsPerRound = 4;
        o.BatchSize = 8;
        o.LearningRate = 0.01;
        o.ReplayRatio = 0;
        configure?.Invoke(o);
    });

    private static double Accuracy(ITextClassifier classifier, IEnumerable<(string Text, string Label)> examples)
    {
        var list = examples.ToList();
        return list.Count(e => classifier.Predict(e.Text).Label == e.Label) / (double)list.Count;
    }

    [Fact]
    public async Task Round_over_text_feedback_trains_and_the_classifier_predicts_labels_from_the_map()
    {
        await using var h = await StartAsync();
        Assert.IsType<BertFeedbackEncoder>(h.Host.Services.GetRequiredKeyedService<IFeedbackEncoder>(h.Name));
        var classifier = h.Host.Services.GetRequiredKeyedService<ITextClassifier>(h.Name);
        Assert.Same(classifier, h.Host.Services.GetRequiredService<ITextClassifier>());
        Assert.Equal(TextModelFixture.Intents, classifier.Labels);
        var before = Accuracy(classifier, model.Test);

        // Labels by name resolve through the artifacts' labels.json.
        foreach (var (text, label) in model.Train)
            await h.Writer.WriteAsync(Feedback.ForText(text, label));
        var e = await h.NextRoundAsync();

        output.WriteLine($"round {e.Outcome} in {e.Duration.TotalSeconds:F1} s, train loss {e.Decision?.TrainLoss:F4}, " +
            $"held-out {e.Decision?.Serving.HeldOutMetric:F3} -> {e.Decision?.Candidate.HeldOutMetric:F3} (n={e.Decision?.Candidate.HeldOutCount}), " +
            $"golden {e.Decision?.Serving.GoldenMetric:F3} -> {e.Decision?.Candidate.GoldenMetric:F3} (n={e.Decision?.Candidate.GoldenCount})");
        Assert.True(e.Outcome == RoundOutcome.Promoted, $"round outcome {e.Outcome}: {e.Error}{string.Join("; ", e.Decision?.Reasons ?? [])}");
        Assert.True(double.IsFinite(e.Decision!.TrainLoss) && e.Decision.TrainLoss > 0 && e.Decision.TrainLoss < Math.Log(3),
            $"train loss {e.Decision.TrainLoss}");
        Assert.Equal(model.Test.Count, e.Decision.Candidate.GoldenCount);
        Assert.True(e.Decision.Candidate.HeldOutCount > 0);
        Assert.Equal(1, h.Handle.ServingVersion);

        var p = classifier.Predict("wake me up at 6 am tomorrow");
        output.WriteLine($"'wake me up at 6 am tomorrow' -> {p.Label} ({p.Confidence:F3}) [{string.Join(", ", p.Probabilities.Select(x => x.ToString("F3")))}] v{p.Version}");
        Assert.Equal(1, p.Version);
        Assert.Contains(p.Label, TextModelFixture.Intents);
        Assert.Equal(TextModelFixture.Intents[p.ClassIndex], p.Label);
        Assert.Equal(1.0, p.Probabilities.Sum(), 1e-5);
        Assert.Equal(p.Probabilities.Max(), p.Confidence);
        var after = Accuracy(classifier, model.Test);
        output.WriteLine($"test accuracy (30 CLINC150 test texts) {before:F3} -> {after:F3}");
        Assert.True(after >= 0.9 && after > before, $"test accuracy {before} -> {after}");
    }

    [Fact]
    public async Task Concurrent_predictions_match_sequential_ones()
    {
        await using var h = await StartAsync();
        var classifier = h.Host.Services.GetRequiredKeyedService<ITextClassifier>(h.Name);
        var texts = model.Test.Select(e => e.Text).ToArray();
        var sequential = texts.Select(t => classifier.Predict(t)).ToArray();
        var parallel = new TextPrediction[texts.Length];
        Parallel.For(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => parallel[i] = classifier.Predict(texts[i]));
        for (var i = 0; i < texts.Length; i++)
        {
            Assert.Equal(sequential[i].ClassIndex, parallel[i].ClassIndex);
            Assert.Equal(sequential[i].Probabilities, parallel[i].Probabilities);
            Assert.Null(parallel[i].Version);
        }
    }

    [Fact]
    public async Task Batch_predictions_match_one_at_a_time_in_input_order()
    {
        await using var h = await StartAsync();
        var classifier = h.Host.Services.GetRequiredKeyedService<ITextClassifier>(h.Name);
        // Mixed lengths, so batches pad; a batch size that leaves a partial last batch.
        var texts = model.Test.Select(e => e.Text).Concat(["a", "set an alarm for seven thirty tomorrow morning please and thank you"]).ToArray();
        var single = texts.Select(t => classifier.Predict(t)).ToArray();
        var batched = classifier.PredictBatch(texts, batchSize: 5);
        Assert.Equal(texts.Length, batched.Count);
        for (var i = 0; i < texts.Length; i++)
        {
            Assert.Equal(single[i].ClassIndex, batched[i].ClassIndex);
            Assert.Equal(single[i].Label, batched[i].Label);
            for (var c = 0; c < single[i].Probabilities.Count; c++)
                Assert.Equal(single[i].Probabilities[c], batched[i].Probabilities[c], 1e-5f);
        }
        Assert.Empty(classifier.PredictBatch([]));
        Assert.Throws<ArgumentOutOfRangeException>(() => classifier.PredictBatch(texts, 0));
    }

    [Fact]
    public void Bucket_padding_leaves_the_logits_unchanged()
    {
        var text = TextModelContext.TryCreate("m", model.Manifest, model.ArtifactsPath)!;
        Assert.Equal(64, text.Encoder.MaxLength);
        Assert.Equal("logits", text.OutputName);
        var encoder = new BertFeedbackEncoder(text);
        using var session = new InferenceSession(Path.Combine(model.ArtifactsPath, model.Manifest.Files.InferenceModel));
        foreach (var s in new[] { "set an alarm", "what's the spanish word for pasta and how do i say good night in french please" })
        {
            var exact = text.Encode(s, bucket: 0);
            var padded = encoder.Encode(new FeedbackRecord { Id = "r", Text = s });
            var length = exact[BertInputNames.InputIds].Shape[1];
            var width = padded[BertInputNames.InputIds].Shape[1];
            Assert.Equal((length + 15) / 16 * 16, width);
            Assert.Equal(length, padded[BertInputNames.AttentionMask].Int64Data!.Sum());
            Assert.All(padded[BertInputNames.InputIds].Int64Data!.Skip((int)length), id => Assert.Equal(text.Encoder.PaddingTokenId, id));
            Assert.Equal([BertInputNames.AttentionMask, BertInputNames.InputIds, BertInputNames.TokenTypeIds], padded.Keys.Order(StringComparer.Ordinal));
            var a = Run(session, exact);
            var b = Run(session, padded);
            output.WriteLine($"{length} tokens padded to {width}: max |Δlogit| {a.Zip(b, (x, y) => Math.Abs(x - y)).Max():E2}");
            for (var i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i], 1e-4f);
        }
    }

    [Fact]
    public void Tensor_records_pass_through_the_text_encoder()
    {
        var encoder = new BertFeedbackEncoder(TextModelContext.TryCreate("m", model.Manifest, model.ArtifactsPath)!);
        var tensors = new Dictionary<string, TensorData> { [BertInputNames.InputIds] = TensorData.Int64([101, 102], 1, 2) };
        Assert.Same(tensors, encoder.Encode(new FeedbackRecord { Id = "t", Tensors = tensors }));
        var e = Assert.Throws<OnnxTuneException>(() => encoder.Encode(new FeedbackRecord { Id = "empty" }));
        Assert.Contains("record empty has neither text nor tensors", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Text_over_MaxTextLength_and_unknown_labels_are_rejected_with_typed_errors()
    {
        await using var h = await StartAsync(o => { o.MaxTextLength = 20; o.HeldOutShare = 0; });
        var tooLong = await Assert.ThrowsAsync<FeedbackValidationException>(() => h.Writer.WriteAsync(Feedback.ForText("please set an alarm for seven", "alarm")).AsTask());
        Assert.Equal(FeedbackErrorKind.TextTooLong, tooLong.Kind);
        Assert.Equal("Text", tooLong.Field);
        Assert.Contains("MaxTextLength", tooLong.Message, StringComparison.Ordinal);
        var unknown = await Assert.ThrowsAsync<FeedbackValidationException>(() => h.Writer.WriteAsync(Feedback.ForText("book a flight", "book_flight")).AsTask());
        Assert.Equal(FeedbackErrorKind.UnknownLabel, unknown.Kind);
        var ok = await h.Writer.WriteAsync(Feedback.ForText("set an alarm", "alarm"));
        Assert.Equal(1, ok.Sequence);
        Assert.Equal(0, (await h.Store.GetTrainingSinceAsync(0, 1)).Single().LabelIndex);
    }

    [Fact]
    public async Task Tensor_models_keep_the_tensor_encoder_and_have_no_text_classifier()
    {
        using var dir = new TempDir();
        await using var h = await Harness.StartAsync(dir, round: null);
        Assert.IsType<TensorFeedbackEncoder>(h.Host.Services.GetRequiredKeyedService<IFeedbackEncoder>(h.Name));
        var e = Assert.Throws<TextModelUnavailableException>(() => h.Host.Services.GetRequiredKeyedService<ITextClassifier>(h.Name));
        Assert.Contains("onnxtune.tokenizer.vocab", e.Message, StringComparison.Ordinal);
    }

    private static float[] Run(InferenceSession session, IReadOnlyDictionary<string, TensorData> inputs)
    {
        var names = inputs.Keys.ToList();
        var values = names.Select(n => OrtValue.CreateTensorValueFromMemory(inputs[n].Int64Data!, inputs[n].Shape.ToArray())).ToList();
        try
        {
            using var ro = new RunOptions();
            using var outs = session.Run(ro, names, values, ["logits"]);
            return outs[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }
}
