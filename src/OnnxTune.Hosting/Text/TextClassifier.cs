namespace OnnxTune.Hosting.Internal;

/// <summary>The default <see cref="ITextClassifier"/>: tokenize (no padding), predict through the handle, softmax.</summary>
internal sealed class TextClassifier(TextModelContext model, IModelHandle handle, IReadOnlyList<string>? labels) : ITextClassifier
{
    public string ModelName => handle.ModelName;

    public IReadOnlyList<string>? Labels => labels;

    public TextPrediction Predict(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var inputs = model.Encode(text, bucket: 0);
        var result = handle.Predict(inputs);
        if (!result.Outputs.TryGetValue(model.OutputName, out var scores))
            throw new OnnxTuneException(
                $"Model '{ModelName}' has no float output '{model.OutputName}' (outputs: {string.Join(", ", result.Outputs.Keys)}).");
        if (scores.FloatData is not { } logits || scores.Shape.Count != 2 || scores.Shape[0] != 1)
            throw new OnnxTuneException(
                $"Model '{ModelName}': output '{model.OutputName}' is {scores.ElementType} [{string.Join(",", scores.Shape)}] for one text; expected float [1, classes].");
        if (labels is not null && labels.Count != logits.Length)
            throw new OnnxTuneException(
                $"Model '{ModelName}': output '{model.OutputName}' has {logits.Length} class scores, but the label list has {labels.Count} labels.");
        var probabilities = Softmax(logits);
        var best = 0;
        for (var i = 1; i < probabilities.Length; i++)
            if (probabilities[i] > probabilities[best]) best = i;
        return new TextPrediction(best, labels?[best], probabilities, result.Version);
    }

    private static float[] Softmax(float[] logits)
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
