namespace OnnxTune.Hosting.Images.Internal;

/// <summary>The default <see cref="IImageFeedbackWriter"/>: preprocess, then the model's tensor feedback writer.</summary>
internal sealed class ImageFeedbackWriter(ImageModelServices image) : IImageFeedbackWriter
{
    public ValueTask<FeedbackReceipt> WriteAsync(ReadOnlyMemory<byte> encodedImage, FeedbackLabel label, string? userId = null, CancellationToken cancellationToken = default) =>
        image.Model.Writer.WriteAsync(Create(encodedImage.Span, label, userId), cancellationToken);

    public Feedback Create(ReadOnlySpan<byte> encodedImage, FeedbackLabel label, string? userId = null) =>
        Feedback.ForTensors(
            new Dictionary<string, TensorData>(StringComparer.Ordinal) { [image.Preprocessor.Shape.InputName] = image.Preprocessor.Preprocess(encodedImage) },
            label,
            userId);
}
