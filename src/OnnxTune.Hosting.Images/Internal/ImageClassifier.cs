namespace OnnxTune.Hosting.Images.Internal;

/// <summary>The default <see cref="IImageClassifier"/>: preprocess, predict through the model's handle, softmax.</summary>
internal sealed class ImageClassifier(ImageModelServices image) : IImageClassifier
{
    private readonly IModelHandle _handle = image.Model.Handle;

    public string ModelName => image.Model.Name;

    public IReadOnlyList<string>? Labels => image.Model.Schema.Labels;

    public ImageInputShape Shape => image.Preprocessor.Shape;

    public ImagePrediction Predict(ReadOnlySpan<byte> encodedImage)
    {
        var input = image.Preprocessor.Preprocess(encodedImage);
        var result = _handle.Predict(new Dictionary<string, TensorData>(StringComparer.Ordinal) { [Shape.InputName] = input });
        var scores = Scores(result, rows: 1);
        return ToPrediction(scores.FloatData!, 0, (int)scores.Shape[1], result.Version);
    }

    public IReadOnlyList<ImagePrediction> PredictBatch(IReadOnlyList<ReadOnlyMemory<byte>> encodedImages, int batchSize = 32)
    {
        ArgumentNullException.ThrowIfNull(encodedImages);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        // Every image is decoded before anything runs, so a bad one fails the call up front with its index.
        var per = Shape.ElementsPerImage;
        var all = new float[checked(per * encodedImages.Count)];
        for (var i = 0; i < encodedImages.Count; i++)
            image.Preprocessor.Fill(encodedImages[i].Span, all.AsSpan(i * per, per), $"images[{i}]");
        var predictions = new ImagePrediction[encodedImages.Count];
        for (var start = 0; start < encodedImages.Count; start += batchSize)
        {
            var rows = Math.Min(batchSize, encodedImages.Count - start);
            var input = TensorData.Float(all.AsSpan(start * per, rows * per).ToArray(), Shape.TensorShape(rows));
            var result = _handle.Predict(new Dictionary<string, TensorData>(StringComparer.Ordinal) { [Shape.InputName] = input });
            var scores = Scores(result, rows);
            for (var r = 0; r < rows; r++)
                predictions[start + r] = ToPrediction(scores.FloatData!, r, (int)scores.Shape[1], result.Version);
        }
        return predictions;
    }

    private TensorData Scores(ModelOutput result, int rows)
    {
        var name = image.OutputName;
        if (!result.Outputs.TryGetValue(name, out var scores))
            throw new OnnxTuneException($"Model '{ModelName}' has no output '{name}' (outputs: {string.Join(", ", result.Outputs.Keys)}).");
        if (scores.FloatData is null || scores.Shape.Count != 2 || scores.Shape[0] != rows)
            throw new OnnxTuneException(
                $"Model '{ModelName}': output '{name}' is {scores.ElementType} [{string.Join(",", scores.Shape)}] for {rows} image(s); expected float [{rows}, classes].");
        if (Labels is { } labels && labels.Count != scores.Shape[1])
            throw new OnnxTuneException($"Model '{ModelName}': output '{name}' has {scores.Shape[1]} class scores, but the label list has {labels.Count} labels.");
        return scores;
    }

    private ImagePrediction ToPrediction(float[] all, int row, int classes, int? version)
    {
        var logits = all.AsSpan(row * classes, classes);
        var max = float.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        var p = new float[classes];
        double sum = 0;
        for (var i = 0; i < classes; i++)
        {
            var e = Math.Exp(logits[i] - max);
            p[i] = (float)e;
            sum += e;
        }
        var best = 0;
        for (var i = 0; i < classes; i++)
        {
            p[i] = (float)(p[i] / sum);
            if (p[i] > p[best]) best = i;
        }
        return new ImagePrediction(best, Labels?[best], p, version);
    }
}
