namespace OnnxTune.Hosting.Images;

/// <summary>
/// Records corrections on images: the image is decoded and preprocessed into the model's input tensor and stored as
/// tensor feedback through the model's <see cref="IFeedbackWriter"/> (so the feedback store holds tensors, as for any
/// tensor model). Keyed by model name, unkeyed for the default model.
/// </summary>
public interface IImageFeedbackWriter
{
    /// <summary>Preprocesses <paramref name="encodedImage"/> and stores it with its correct label; returns once durably stored.</summary>
    /// <exception cref="ImageDecodingException">The bytes are not an acceptable image; nothing was stored.</exception>
    /// <exception cref="FeedbackValidationException">The record is invalid (for example an unknown label); nothing was stored.</exception>
    ValueTask<FeedbackReceipt> WriteAsync(ReadOnlyMemory<byte> encodedImage, FeedbackLabel label, string? userId = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// The tensor <see cref="Feedback"/> for an image, to set more fields (<c>with { Weight = ..., Prediction = ... }</c>)
    /// before writing it with <see cref="IFeedbackWriter"/>.
    /// </summary>
    /// <exception cref="ImageDecodingException">The bytes are not an acceptable image.</exception>
    Feedback Create(ReadOnlySpan<byte> encodedImage, FeedbackLabel label, string? userId = null);
}
