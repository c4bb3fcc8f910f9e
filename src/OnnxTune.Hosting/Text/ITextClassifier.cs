namespace OnnxTune.Hosting;

/// <summary>
/// Classifies text with the serving version of a text model (one whose artifacts record a tokenizer, as
/// <c>onnxtune artifacts --head classification</c> writes). Registered for every model, keyed by model name
/// (and unkeyed for the default model); resolving it for a model without a tokenizer throws
/// <see cref="TextModelUnavailableException"/>. Thread-safe; tokenization runs before the serving session is leased.
/// </summary>
public interface ITextClassifier
{
    /// <summary>Gets the model name (empty for the default model).</summary>
    string ModelName { get; }

    /// <summary>Gets the class names in output order, or <see langword="null"/> when the model has no label list.</summary>
    IReadOnlyList<string>? Labels { get; }

    /// <summary>Tokenizes <paramref name="text"/>, runs the serving model and returns the most probable class.</summary>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    /// <exception cref="OnnxTuneException">The model's output is not one row of class scores.</exception>
    TextPrediction Predict(string text);

    /// <summary>Classifies <paramref name="text"/> for a partition key: with the key's adapter when it has one for the serving version (see <see cref="IModelHandle.Predict(IReadOnlyDictionary{string, TensorData}, string?)"/>).</summary>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    TextPrediction Predict(string text, string? partitionKey);

    /// <summary>
    /// Classifies many texts: texts of similar length share a batch of up to <paramref name="batchSize"/> rows (padded
    /// and masked), each batch one run of the serving model. Results are in input order; a swap between batches can
    /// give later results a newer <see cref="TextPrediction.Version"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is below 1.</exception>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    /// <exception cref="OnnxTuneException">The model's output is not one row of class scores per text.</exception>
    IReadOnlyList<TextPrediction> PredictBatch(IReadOnlyList<string> texts, int batchSize = 32);

    /// <summary>Classifies many texts of one partition key (see <see cref="PredictBatch(IReadOnlyList{string}, int)"/> and <see cref="Predict(string, string?)"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is below 1.</exception>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    IReadOnlyList<TextPrediction> PredictBatch(IReadOnlyList<string> texts, string? partitionKey, int batchSize = 32);
}

/// <summary>A text classification result.</summary>
/// <param name="ClassIndex">The most probable class (argmax).</param>
/// <param name="Label">Its name from the label list, or <see langword="null"/> when the model has none.</param>
/// <param name="Probabilities">Softmax of the class scores, in output order.</param>
/// <param name="Version">The model version that produced it (null: the artifacts' base model).</param>
public sealed record TextPrediction(int ClassIndex, string? Label, IReadOnlyList<float> Probabilities, int? Version)
{
    /// <summary>Gets the partition key's adapter version that produced it (null: the shared model).</summary>
    public int? AdapterVersion { get; init; }

    /// <summary>Gets the probability of the predicted class.</summary>
    public float Confidence => Probabilities[ClassIndex];
}

/// <summary>A text service was requested for a model whose artifacts record no tokenizer.</summary>
public sealed class TextModelUnavailableException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public TextModelUnavailableException(string modelName, string message) : base(message) => ModelName = modelName;

    /// <summary>Gets the model name.</summary>
    public string ModelName { get; }
}
