namespace OnnxTune.Hosting.Images;

/// <summary>
/// Classifies images with the serving version of a model whose input is an image (registered by
/// <c>AddImageClassification</c>, keyed by model name and unkeyed for the default model). Decoding and
/// preprocessing run before the serving session is leased. Thread-safe.
/// </summary>
public interface IImageClassifier
{
    /// <summary>Gets the model name (empty for the default model).</summary>
    string ModelName { get; }

    /// <summary>Gets the class names in output order, or <see langword="null"/> when the model has no label list.</summary>
    IReadOnlyList<string>? Labels { get; }

    /// <summary>Gets the input images are converted to.</summary>
    ImageInputShape Shape { get; }

    /// <summary>Decodes and preprocesses an encoded image (PNG, JPEG, ...), runs the serving model and returns the most probable class.</summary>
    /// <exception cref="ImageDecodingException">The bytes are not an acceptable image.</exception>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    /// <exception cref="OnnxTuneException">The model's output is not one row of class scores.</exception>
    ImagePrediction Predict(ReadOnlySpan<byte> encodedImage);

    /// <summary>
    /// Classifies many images, up to <paramref name="batchSize"/> per run of the serving model; results are in input
    /// order. A swap between batches can give later results a newer <see cref="ImagePrediction.Version"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is below 1.</exception>
    /// <exception cref="ImageDecodingException">An image is not acceptable (<see cref="ImageDecodingException.Field"/> names it); nothing was run.</exception>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    IReadOnlyList<ImagePrediction> PredictBatch(IReadOnlyList<ReadOnlyMemory<byte>> encodedImages, int batchSize = 32);
}

/// <summary>An image classification result.</summary>
/// <param name="ClassIndex">The most probable class (argmax).</param>
/// <param name="Label">Its name from the label list, or <see langword="null"/> when the model has none.</param>
/// <param name="Probabilities">Softmax of the class scores, in output order.</param>
/// <param name="Version">The model version that produced it (null: the base model).</param>
public sealed record ImagePrediction(int ClassIndex, string? Label, IReadOnlyList<float> Probabilities, int? Version)
{
    /// <summary>Gets the probability of the predicted class.</summary>
    public float Confidence => Probabilities[ClassIndex];
}
