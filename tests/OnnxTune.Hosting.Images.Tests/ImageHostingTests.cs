using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.ML.OnnxRuntime;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Images.Tests;

/// <summary>
/// Image fine-tuning through the public hosting API: a small CNN's artifacts, <c>AddOnDeviceFineTuning(...)
/// .AddImageClassification()</c>, UCI digits sent as PNG feedback, rounds gated and promoted, and
/// <see cref="IImageClassifier"/> measured on digits it never saw.
/// </summary>
public sealed class ImageHostingTests(ITestOutputHelper output) : IDisposable
{
    private const string Name = "digits";
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private async Task<IHost> StartAsync(Action<OnDeviceFineTuningOptions>? configure = null)
    {
        if (!Directory.Exists(_dir.Sub("artifacts"))) DigitCnn.WriteArtifacts(_dir.Sub("artifacts"));
        var builder = Host.CreateEmptyApplicationBuilder(new());
        builder.Services.AddOnDeviceFineTuning(Name, o =>
        {
            o.ArtifactsPath = _dir.Sub("artifacts");
            o.ModelStorePath = _dir.Sub("store");
            o.Labels = DigitCnn.Labels;
            // Rounds run when the test asks (RunRoundAsync), not on their own.
            o.MinNewFeedback = 1_000_000;
            o.MaxInterval = TimeSpan.FromDays(30);
            configure?.Invoke(o);
        }).AddImageClassification();
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>A fixed split of the 1,797 digits: 360 held out from everything, the rest sent as feedback.</summary>
    private static (List<(byte[] Png, int Label)> Feedback, List<(byte[] Png, int Label)> Test) Split()
    {
        var rows = Digits.Rows.Select(r => (Png: Digits.Png(r.Pixels), r.Label)).ToList();
        var order = Enumerable.Range(0, rows.Count).ToArray();
        new Random(2026).Shuffle(order);
        return (order.Skip(360).Select(i => rows[i]).ToList(), order.Take(360).Select(i => rows[i]).ToList());
    }

    private static double Accuracy(IImageClassifier classifier, List<(byte[] Png, int Label)> test)
    {
        var predictions = classifier.PredictBatch(test.Select(t => (ReadOnlyMemory<byte>)t.Png).ToList());
        return predictions.Zip(test).Count(p => p.First.ClassIndex == p.Second.Label && p.First.Label == p.Second.Label.ToString(CultureInfo.InvariantCulture)) / (double)test.Count;
    }

    [Fact]
    public async Task Cnn_fine_tuned_on_png_digit_feedback_reaches_95_percent_on_held_out_digits()
    {
        var wall = Stopwatch.StartNew();
        var (feedback, test) = Split();
        using var host = await StartAsync(o =>
        {
            o.LearningRate = 3e-3;
            o.EncoderLearningRateScale = 1;   // trained from scratch: every layer at the full rate
            o.EpochsPerRound = 15;
            o.BatchSize = 32;
            o.HeldOutShare = 0.15;
        });
        var writer = host.Services.GetRequiredKeyedService<IImageFeedbackWriter>(Name);
        var classifier = host.Services.GetRequiredKeyedService<IImageClassifier>(Name);
        var admin = host.Services.GetRequiredKeyedService<IFineTuningAdmin>(Name);
        Assert.Equal(new ImageInputShape(DigitCnn.Input, ImageLayout.Nchw, 1, 8, 8), classifier.Shape);
        var before = Accuracy(classifier, test);
        output.WriteLine($"base model (random init): {before:P1} on {test.Count} held-out digits");

        var waves = feedback.Chunk((feedback.Count + 2) / 3).ToList();
        var promoted = 0;
        var accuracy = before;
        for (var w = 0; w < waves.Count; w++)
        {
            var i = 0;
            foreach (var (png, label) in waves[w])
                await writer.WriteAsync(png, label.ToString(CultureInfo.InvariantCulture), userId: $"user{i++ % 10}");
            var round = await admin.RunRoundAsync();
            Assert.NotNull(round);
            var d = round.Decision;
            accuracy = Accuracy(classifier, test);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wave {w + 1}: {waves[w].Length} images, round {round.Outcome} (train loss {d?.TrainLoss:F4}, held-out {d?.Serving.HeldOutMetric:F3} -> {d?.Candidate.HeldOutMetric:F3}, n={d?.Candidate.HeldOutCount}; {round.Statistics.Steps} steps, {round.Duration.TotalSeconds:F1} s); serving v{classifier.PredictBatch([waves[0][0].Png])[0].Version}: {accuracy:P1} on held-out digits"));
            Assert.True(round.Outcome == RoundOutcome.Promoted, $"round {w + 1}: {round.Outcome} {round.Error?.Message} {string.Join("; ", d?.Reasons ?? [])}");
            promoted++;
        }
        output.WriteLine($"{promoted}/{waves.Count} rounds promoted; held-out digits {before:P1} -> {accuracy:P1}; {wall.Elapsed.TotalSeconds:F1} s wall");
        Assert.Equal(waves.Count, classifier.Predict(test[0].Png).Version);
        Assert.True(accuracy >= 0.95, $"accuracy on {test.Count} held-out digits is {accuracy:P1}");
        await host.StopAsync();
    }

    [Fact]
    public async Task Image_prediction_equals_the_session_run_on_the_preprocessed_tensor()
    {
        using var host = await StartAsync();
        var classifier = host.Services.GetRequiredKeyedService<IImageClassifier>(Name);
        var preprocessor = host.Services.GetRequiredKeyedService<ImagePreprocessor>(Name);
        var handle = host.Services.GetRequiredKeyedService<IModelHandle>(Name);
        var images = Digits.Rows.Take(5).Select(r => Digits.Png(r.Pixels)).ToList();

        var single = images.Select(png => classifier.Predict(png)).ToList();
        var batch = classifier.PredictBatch(images.Select(png => (ReadOnlyMemory<byte>)png).ToList(), batchSize: 2);
        for (var i = 0; i < images.Count; i++)
        {
            var tensor = preprocessor.Preprocess(images[i]);
            // The digit's gray levels, scaled by 1/255 (no mean/std by default), in [1, 1, 8, 8].
            Assert.Equal([1L, 1, 8, 8], tensor.Shape);
            var pixels = Digits.Rows[i].Pixels;
            for (var p = 0; p < 64; p++) Assert.Equal(Digits.Gray(pixels[p]) * (1f / 255f), tensor.FloatData![p]);

            // The artifacts' inference model in a session of its own, on that tensor.
            using var session = new InferenceSession(Path.Combine(_dir.Sub("artifacts"), "inference_model.onnx"));
            using var x = OrtValue.CreateTensorValueFromMemory(tensor.FloatData!, [1, 1, 8, 8]);
            using var ro = new RunOptions();
            using var outs = session.Run(ro, new Dictionary<string, OrtValue> { [DigitCnn.Input] = x }, [DigitCnn.Output]);
            var logits = outs[0].GetTensorDataAsSpan<float>().ToArray();
            var max = logits.Max();
            var exp = logits.Select(l => Math.Exp(l - max)).ToArray();
            var expected = exp.Select(e => (float)(e / exp.Sum())).ToArray();
            var best = Array.IndexOf(expected, expected.Max());

            Assert.Equal(best, single[i].ClassIndex);
            Assert.Equal(DigitCnn.Labels[best], single[i].Label);
            Assert.Null(single[i].Version);
            for (var c = 0; c < 10; c++)
            {
                Assert.Equal(expected[c], single[i].Probabilities[c], 6);
                Assert.Equal(single[i].Probabilities[c], batch[i].Probabilities[c], 6);
            }
            // The serving session through the handle agrees too.
            var served = handle.Predict(new Dictionary<string, TensorData> { [DigitCnn.Input] = tensor }).Outputs[DigitCnn.Output].FloatData!;
            for (var c = 0; c < 10; c++) Assert.Equal(logits[c], served[c], 5);
        }
    }

    [Fact]
    public async Task Image_feedback_is_stored_as_the_preprocessed_tensor_and_bad_images_store_nothing()
    {
        using var host = await StartAsync();
        var writer = host.Services.GetRequiredKeyedService<IImageFeedbackWriter>(Name);
        var store = host.Services.GetRequiredKeyedService<IFeedbackStore>(Name);
        var png = Digits.Png(Digits.Rows[3].Pixels);

        var receipt = await writer.WriteAsync(png, "7", userId: "u1");
        var corrupt = png.ToArray();
        corrupt.AsSpan(20, 16).Fill(0xEE);   // the IHDR chunk: its CRC no longer matches
        var e = await Assert.ThrowsAsync<ImageDecodingException>(() => writer.WriteAsync(corrupt, "7").AsTask());
        Assert.Equal(ImageErrorKind.Undecodable, e.Kind);
        Assert.Equal("encodedImage", e.Field);
        await Assert.ThrowsAsync<FeedbackValidationException>(() => writer.WriteAsync(png, "eleven").AsTask());

        Assert.Equal(receipt.Sequence, await store.GetLatestSequenceAsync());
        var records = receipt.HeldOut ? await store.GetHeldOutAsync(receipt.Sequence) : await store.GetTrainingSinceAsync(0, receipt.Sequence);
        var record = Assert.Single(records);
        Assert.Equal(7, record.LabelIndex);
        Assert.Equal("u1", record.UserId);
        Assert.Null(record.Text);
        var stored = record.Tensors![DigitCnn.Input];
        Assert.Equal([1L, 1, 8, 8], stored.Shape);
        Assert.Equal(host.Services.GetRequiredKeyedService<ImagePreprocessor>(Name).Preprocess(png).FloatData, stored.FloatData);

        // Create gives the same tensor feedback, for fields the writer does not take.
        var feedback = writer.Create(png, 7, "u2") with { Weight = 2 };
        Assert.Equal(stored.FloatData, feedback.Tensors![DigitCnn.Input].FloatData);
        Assert.Equal(2, feedback.Weight);
    }
}
