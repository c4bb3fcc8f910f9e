namespace OnnxTune.Hosting.Images;

/// <summary>What was wrong with an image.</summary>
public enum ImageErrorKind
{
    /// <summary>No bytes.</summary>
    Empty,

    /// <summary>More bytes than <see cref="ImagePreprocessingOptions.MaxEncodedBytes"/>.</summary>
    TooManyBytes,

    /// <summary>Not an image format the decoder knows, or a damaged or truncated image.</summary>
    Undecodable,

    /// <summary>Width × height above <see cref="ImagePreprocessingOptions.MaxPixels"/> (read from the header, before decoding).</summary>
    TooManyPixels,
}

/// <summary>An image could not be turned into the model's input; nothing was stored or run.</summary>
public sealed class ImageDecodingException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public ImageDecodingException(ImageErrorKind kind, string field, string message, Exception? inner = null) : base(message, inner)
    {
        Kind = kind;
        Field = field;
    }

    /// <summary>Gets what was wrong.</summary>
    public ImageErrorKind Kind { get; }

    /// <summary>Gets the argument at fault (<c>encodedImage</c>, or <c>images[i]</c> in a batch).</summary>
    public string Field { get; }
}

/// <summary>
/// The model cannot take images as configured: no 4-D float input (or several and no
/// <see cref="ImagePreprocessingOptions.InputName"/>), a channel count other than 1 or 3, a size the options
/// contradict, or a mean/std list of the wrong length. The message names the input, dim or option key.
/// </summary>
public sealed class ImageModelException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public ImageModelException(string modelName, string message) : base(message) => ModelName = modelName;

    /// <summary>Gets the model name (empty for the default model).</summary>
    public string ModelName { get; }
}
