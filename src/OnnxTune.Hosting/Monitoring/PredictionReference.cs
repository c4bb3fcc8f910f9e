namespace OnnxTune.Hosting;

/// <summary>
/// The prediction a feedback record answers: which version served it (<see cref="ModelOutput.Version"/>,
/// <see cref="TextPrediction.Version"/>) and, optionally, what it predicted. Feedback carrying one is a correction of
/// that version unless the predicted label equals the feedback's label (a confirmation). The drift watch counts
/// corrections per version against the predictions the model handle served for it.
/// </summary>
/// <param name="Version">The version that served the prediction (null: the artifacts' base model).</param>
/// <param name="PredictedLabel">What it predicted, when known.</param>
public sealed record PredictionReference(int? Version, FeedbackLabel? PredictedLabel = null)
{
    /// <summary>The reference of a text prediction (its version and predicted class).</summary>
    public static PredictionReference From(TextPrediction prediction)
    {
        ArgumentNullException.ThrowIfNull(prediction);
        return new PredictionReference(prediction.Version, new FeedbackLabel(prediction.ClassIndex));
    }
}
