namespace OnnxTune.Hosting.Internal;

/// <summary>The default <see cref="ITextClassifier"/>: tokenize (no padding), predict through the handle, softmax.</summary>
internal sealed class TextClassifier(TextModelContext model, IModelHandle handle, IReadOnlyList<string>? labels) : ITextClassifier
{
    public string ModelName => handle.ModelName;

    public IReadOnlyList<string>? Labels => labels;

    public TextPrediction Predict(string text) => Predict(text, null);

    public TextPrediction Predict(string text, string? partitionKey)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = handle.Predict(model.Encode(text, bucket: 0), partitionKey);
        var scores = Scores(result, rows: 1);
        return ToPrediction(scores.FloatData!, 0, scores.Shape[1], result.Version) with { AdapterVersion = result.AdapterVersion };
    }

    public IReadOnlyList<TextPrediction> PredictBatch(IReadOnlyList<string> texts, int batchSize = 32) => PredictBatch(texts, null, batchSize);

    public IReadOnlyList<TextPrediction> PredictBatch(IReadOnlyList<string> texts, string? partitionKey, int batchSize = 32)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var tokens = new int[texts.Count][];
        for (var i = 0; i < texts.Count; i++)
            tokens[i] = model.Encoder.Encode(texts[i] ?? throw new ArgumentNullException(nameof(texts), $"texts[{i}] is null."));
        // Shortest first, so each batch pads little; results go back to input order.
        var order = Enumerable.Range(0, texts.Count).OrderBy(i => tokens[i].Length).ToArray();
        var predictions = new TextPrediction[texts.Count];
        foreach (var chunk in order.Chunk(batchSize))
        {
            var result = handle.Predict(model.EncodeBatch(Array.ConvertAll(chunk, i => tokens[i])), partitionKey);
            var scores = Scores(result, chunk.Length);
            var classes = (int)scores.Shape[1];
            for (var r = 0; r < chunk.Length; r++)
                predictions[chunk[r]] = ToPrediction(scores.FloatData!, r, classes, result.Version) with { AdapterVersion = result.AdapterVersion };
        }
        return predictions;
    }

    private TensorData Scores(ModelOutput result, int rows)
    {
        if (!result.Outputs.TryGetValue(model.OutputName, out var scores))
            throw new OnnxTuneException(
                $"Model '{ModelName}' has no float output '{model.OutputName}' (outputs: {string.Join(", ", result.Outputs.Keys)}).");
        if (scores.FloatData is null || scores.Shape.Count != 2 || scores.Shape[0] != rows)
            throw new OnnxTuneException(
                $"Model '{ModelName}': output '{model.OutputName}' is {scores.ElementType} [{string.Join(",", scores.Shape)}] for {rows} text(s); expected float [{rows}, classes].");
        if (labels is not null && labels.Count != scores.Shape[1])
            throw new OnnxTuneException(
                $"Model '{ModelName}': output '{model.OutputName}' has {scores.Shape[1]} class scores, but the label list has {labels.Count} labels.");
        return scores;
    }

    private TextPrediction ToPrediction(float[] all, int row, long classes, int? version)
    {
        var probabilities = Softmax(all.AsSpan((int)(row * classes), (int)classes));
        var best = 0;
        for (var i = 1; i < probabilities.Length; i++)
            if (probabilities[i] > probabilities[best]) best = i;
        return new TextPrediction(best, labels?[best], probabilities, version);
    }

    private static float[] Softmax(ReadOnlySpan<float> logits)
    {
        var max = float.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        var p = new float[logits.Length];
        double sum = 0;
        for (var i = 0; i < p.Length; i++)
        {
            var e = Math.Exp(logits[i] - max);
            p[i] = (float)e;
            sum += e;
        }
        for (var i = 0; i < p.Length; i++) p[i] = (float)(p[i] / sum);
        return p;
    }
}
