namespace OnnxTune.Hosting.Images;

/// <summary>
/// How image bytes become the model's input tensor: decode, resize to the input's height and width, scale, normalise
/// per channel (torchvision's <c>ToTensor</c> then <c>Normalize(mean, std)</c>) and lay out as NCHW (or NHWC). The
/// channel count (1: grayscale, 3: colour) and, when fixed, the size come from the model's input shape. Bound from
/// the section <c>ImageClassification</c> (<c>ImageClassification:&lt;name&gt;</c> for a named model; unknown keys fail
/// start-up) and validated at start, each error naming its key.
/// </summary>
public sealed class ImagePreprocessingOptions
{
    /// <summary>The configuration section of the default model; a named model uses <c>ImageClassification:&lt;name&gt;</c>.</summary>
    public const string DefaultSectionName = "ImageClassification";

    /// <summary>Gets or sets the image input of the model.</summary>
    /// <value>The default value is <see langword="null"/>: the model's only 4-D float input.</value>
    public string? InputName { get; set; }

    /// <summary>Gets or sets the scored output (class logits, <c>[batch, classes]</c>).</summary>
    /// <value>The default value is <see langword="null"/>: the loss's output in the artifacts manifest, else the first output.</value>
    public string? OutputName { get; set; }

    /// <summary>Gets or sets the width images are resized to; required when the model's width dim is symbolic, else it must match it.</summary>
    public int? Width { get; set; }

    /// <summary>Gets or sets the height images are resized to; required when the model's height dim is symbolic, else it must match it.</summary>
    public int? Height { get; set; }

    /// <summary>Gets or sets the tensor layout of the input.</summary>
    /// <value>The default value is <see cref="ImageLayout.Nchw"/> (PyTorch's).</value>
    public ImageLayout Layout { get; set; } = ImageLayout.Nchw;

    /// <summary>Gets or sets the order of the colour channels (3-channel models).</summary>
    /// <value>The default value is <see cref="ImageChannelOrder.Rgb"/> (torchvision's).</value>
    public ImageChannelOrder ChannelOrder { get; set; } = ImageChannelOrder.Rgb;

    /// <summary>Gets or sets the factor applied to 8-bit pixel values before normalisation.</summary>
    /// <value>The default value is 1/255 (torchvision's <c>ToTensor</c>: values in [0, 1]).</value>
    public float Scale { get; set; } = 1f / 255f;

    /// <summary>Gets the per-channel mean subtracted after scaling (one value for all channels, or one per channel in <see cref="ChannelOrder"/>).</summary>
    /// <value>The default value is empty: 0 (for ImageNet models, 0.485, 0.456, 0.406).</value>
    public IList<float> Mean { get; } = [];

    /// <summary>Gets the per-channel standard deviation divided by after subtracting <see cref="Mean"/> (one value, or one per channel).</summary>
    /// <value>The default value is empty: 1 (for ImageNet models, 0.229, 0.224, 0.225).</value>
    public IList<float> Std { get; } = [];

    /// <summary>Gets or sets the resampling filter used when an image's size differs from the input's.</summary>
    /// <value>The default value is <see cref="ImageInterpolation.Bilinear"/>.</value>
    public ImageInterpolation Interpolation { get; set; } = ImageInterpolation.Bilinear;

    /// <summary>Gets or sets the largest width × height accepted, checked from the image header before decoding (decompression bombs).</summary>
    /// <value>The default value is 25,000,000 (a 24-megapixel photo; 100 MB decoded).</value>
    public long MaxPixels { get; set; } = 25_000_000;

    /// <summary>Gets or sets the largest encoded image accepted, in bytes.</summary>
    /// <value>The default value is 32 MiB.</value>
    public int MaxEncodedBytes { get; set; } = 32 * 1024 * 1024;

    /// <summary>Gets or sets the configuration path the options were bound from (for error messages); set by the builder.</summary>
    public string ConfigurationPath { get; set; } = DefaultSectionName;
}

/// <summary>The tensor layout of an image input.</summary>
public enum ImageLayout
{
    /// <summary><c>[batch, channels, height, width]</c> (PyTorch).</summary>
    Nchw,

    /// <summary><c>[batch, height, width, channels]</c> (TensorFlow, Keras).</summary>
    Nhwc,
}

/// <summary>The order of the colour channels in a 3-channel input.</summary>
public enum ImageChannelOrder
{
    /// <summary>Red, green, blue (torchvision, PIL).</summary>
    Rgb,

    /// <summary>Blue, green, red (OpenCV, Caffe).</summary>
    Bgr,
}

/// <summary>The resampling filter of a resize.</summary>
public enum ImageInterpolation
{
    /// <summary>Bilinear (Skia's linear filter, no mipmaps).</summary>
    Bilinear,

    /// <summary>Nearest neighbour.</summary>
    Nearest,

    /// <summary>Bicubic (Catmull-Rom, as PIL's and torchvision's bicubic: a = -0.5).</summary>
    Bicubic,
}
