using System.Globalization;
using SkiaSharp;

namespace OnnxTune.Hosting.Images;

/// <summary>
/// Turns encoded images (PNG, JPEG, WebP, GIF, BMP, ICO, WBMP; decoded by SkiaSharp) into the model's input tensor:
/// 8-bit RGB (alpha dropped, as PIL's <c>convert("RGB")</c>) or luma L = 0.299 R + 0.587 G + 0.114 B for 1-channel
/// inputs (PIL's <c>convert("L")</c> before rounding; gray images pass unchanged), resized to the input's size,
/// then <c>(v · Scale − mean[c]) / std[c]</c> per channel, in NCHW (or NHWC) order. Thread-safe.
/// </summary>
/// <remarks>
/// The pixel limit is checked from the image header before any pixel is decoded. Resizing is Skia's filter of the
/// chosen kind (no antialiasing when downscaling), so an image whose size differs from the input's is close to, not
/// bit-identical with, torchvision's antialiased resize; images already at the input's size are exact.
/// </remarks>
public sealed class ImagePreprocessor
{
    private readonly float _scale;
    private readonly float[] _mean;
    private readonly float[] _std;
    private readonly bool _bgr;
    private readonly SKSamplingOptions _sampling;
    private readonly long _maxPixels;
    private readonly int _maxBytes;

    /// <summary>Creates a preprocessor for <paramref name="shape"/> with the options' scale, normalisation, filter and limits (copied).</summary>
    /// <exception cref="ArgumentException">An option is out of range or does not fit the shape (the message names it).</exception>
    public ImagePreprocessor(ImageInputShape shape, ImagePreprocessingOptions options)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(options);
        var errors = Validate(options, shape.Channels);
        if (shape.Channels is not (1 or 3)) errors.Insert(0, $"the input has {shape.Channels} channels; images give 1 (grayscale) or 3 (colour)");
        if (shape.Height < 1 || shape.Width < 1) errors.Insert(0, $"the input size {shape.Height}x{shape.Width} is not positive");
        if (errors.Count > 0) throw new ArgumentException(string.Join("; ", errors), nameof(options));
        Shape = shape;
        _scale = options.Scale;
        _mean = Expand(options.Mean, shape.Channels, 0f);
        _std = Expand(options.Std, shape.Channels, 1f);
        _bgr = options.ChannelOrder == ImageChannelOrder.Bgr && shape.Channels == 3;
        _sampling = options.Interpolation switch
        {
            ImageInterpolation.Nearest => new SKSamplingOptions(SKFilterMode.Nearest, SKMipmapMode.None),
            ImageInterpolation.Bicubic => new SKSamplingOptions(SKCubicResampler.CatmullRom),
            _ => new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.None),
        };
        _maxPixels = options.MaxPixels;
        _maxBytes = options.MaxEncodedBytes;
    }

    /// <summary>Gets the input this preprocessor fills.</summary>
    public ImageInputShape Shape { get; }

    /// <summary>Decodes and converts one image into a tensor of shape <c>[1, C, H, W]</c> (or <c>[1, H, W, C]</c>).</summary>
    /// <exception cref="ImageDecodingException">The bytes are empty, too many, not a decodable image, or too many pixels.</exception>
    public TensorData Preprocess(ReadOnlySpan<byte> encodedImage)
    {
        var data = new float[Shape.ElementsPerImage];
        Fill(encodedImage, data, "encodedImage");
        return TensorData.Float(data, Shape.TensorShape(1));
    }

    /// <summary>Decodes and converts several images into one tensor of shape <c>[N, C, H, W]</c> (or <c>[N, H, W, C]</c>).</summary>
    /// <exception cref="ImageDecodingException">An image is empty, too large or undecodable (<see cref="ImageDecodingException.Field"/> is <c>images[i]</c>).</exception>
    public TensorData PreprocessBatch(IReadOnlyList<ReadOnlyMemory<byte>> encodedImages)
    {
        ArgumentNullException.ThrowIfNull(encodedImages);
        var per = Shape.ElementsPerImage;
        var data = new float[checked(per * encodedImages.Count)];
        for (var i = 0; i < encodedImages.Count; i++)
            Fill(encodedImages[i].Span, data.AsSpan(i * per, per), string.Create(CultureInfo.InvariantCulture, $"images[{i}]"));
        return TensorData.Float(data, Shape.TensorShape(encodedImages.Count));
    }

    /// <summary>Writes one image's values into <paramref name="destination"/> (length <see cref="ImageInputShape.ElementsPerImage"/>).</summary>
    internal void Fill(ReadOnlySpan<byte> encoded, Span<float> destination, string field)
    {
        if (encoded.IsEmpty) throw new ImageDecodingException(ImageErrorKind.Empty, field, $"{field} is empty (0 bytes); expected an encoded image (PNG, JPEG, WebP, ...).");
        if (encoded.Length > _maxBytes)
            throw new ImageDecodingException(ImageErrorKind.TooManyBytes, field, $"{field} is {encoded.Length} bytes; at most {_maxBytes} are accepted (MaxEncodedBytes).");

        using var data = SKData.CreateCopy(encoded);
        using var codec = SKCodec.Create(data);
        if (codec is null)
            throw new ImageDecodingException(ImageErrorKind.Undecodable, field, $"{field} ({encoded.Length} bytes) is not an image format SkiaSharp decodes (PNG, JPEG, WebP, GIF, BMP, ICO, WBMP).");
        var (w, h) = (codec.Info.Width, codec.Info.Height);
        if (w < 1 || h < 1)
            throw new ImageDecodingException(ImageErrorKind.Undecodable, field, $"{field} declares a {w}x{h} image.");
        if ((long)w * h > _maxPixels)
            throw new ImageDecodingException(ImageErrorKind.TooManyPixels, field,
                $"{field} declares {w}x{h} = {(long)w * h} pixels; at most {_maxPixels} are decoded (MaxPixels).");

        using var decoded = new SKBitmap(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        var result = codec.GetPixels(decoded.Info, decoded.GetPixels());
        if (result != SKCodecResult.Success)
            throw new ImageDecodingException(ImageErrorKind.Undecodable, field, $"{field}: decoding the {w}x{h} {codec.EncodedFormat} image failed ({result}).");

        if (w == Shape.Width && h == Shape.Height)
        {
            Convert(decoded, destination);
            return;
        }
        using var resized = new SKBitmap(new SKImageInfo(Shape.Width, Shape.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        if (!decoded.ScalePixels(resized, _sampling))
            throw new ImageDecodingException(ImageErrorKind.Undecodable, field, $"{field}: resizing {w}x{h} to {Shape.Width}x{Shape.Height} failed.");
        Convert(resized, destination);
    }

    private void Convert(SKBitmap bitmap, Span<float> destination)
    {
        var pixels = bitmap.GetPixelSpan();
        var rowBytes = bitmap.RowBytes;
        var (c, h, w) = (Shape.Channels, Shape.Height, Shape.Width);
        var nchw = Shape.Layout == ImageLayout.Nchw;
        var plane = h * w;
        for (var y = 0; y < h; y++)
        {
            var row = pixels.Slice(y * rowBytes, w * 4);
            for (var x = 0; x < w; x++)
            {
                var (r, g, b) = (row[x * 4], row[x * 4 + 1], row[x * 4 + 2]);
                var at = y * w + x;
                if (c == 1)
                {
                    var l = r == g && g == b ? r : 0.299f * r + 0.587f * g + 0.114f * b;
                    destination[at] = (l * _scale - _mean[0]) / _std[0];
                    continue;
                }
                var (c0, c2) = _bgr ? (b, r) : (r, b);
                if (nchw)
                {
                    destination[at] = (c0 * _scale - _mean[0]) / _std[0];
                    destination[plane + at] = (g * _scale - _mean[1]) / _std[1];
                    destination[2 * plane + at] = (c2 * _scale - _mean[2]) / _std[2];
                }
                else
                {
                    destination[at * 3] = (c0 * _scale - _mean[0]) / _std[0];
                    destination[at * 3 + 1] = (g * _scale - _mean[1]) / _std[1];
                    destination[at * 3 + 2] = (c2 * _scale - _mean[2]) / _std[2];
                }
            }
        }
    }

    /// <summary>Option errors that do not depend on the model (<paramref name="channels"/> 0: unknown yet), each naming its key.</summary>
    internal static List<string> Validate(ImagePreprocessingOptions o, int channels)
    {
        var p = o.ConfigurationPath;
        var errors = new List<string>();
        if (o.InputName is { } input && string.IsNullOrWhiteSpace(input)) errors.Add($"{p}:InputName is blank; leave it unset to use the model's only image input.");
        if (o.OutputName is { } output && string.IsNullOrWhiteSpace(output)) errors.Add($"{p}:OutputName is blank; leave it unset to use the loss output.");
        if (o.Width is < 1 or > 16384) errors.Add($"{p}:Width {o.Width} must be between 1 and 16384.");
        if (o.Height is < 1 or > 16384) errors.Add($"{p}:Height {o.Height} must be between 1 and 16384.");
        if (!Enum.IsDefined(o.Layout)) errors.Add($"{p}:Layout '{o.Layout}' is not one of {string.Join(", ", Enum.GetNames<ImageLayout>())}.");
        if (!Enum.IsDefined(o.ChannelOrder)) errors.Add($"{p}:ChannelOrder '{o.ChannelOrder}' is not one of {string.Join(", ", Enum.GetNames<ImageChannelOrder>())}.");
        if (!Enum.IsDefined(o.Interpolation)) errors.Add($"{p}:Interpolation '{o.Interpolation}' is not one of {string.Join(", ", Enum.GetNames<ImageInterpolation>())}.");
        if (!float.IsFinite(o.Scale) || o.Scale <= 0) errors.Add($"{p}:Scale {o.Scale.ToString(CultureInfo.InvariantCulture)} must be a positive finite number (1/255 maps 8-bit pixels to [0, 1]).");
        if (o.MaxPixels < 1) errors.Add($"{p}:MaxPixels {o.MaxPixels} must be at least 1.");
        if (o.MaxEncodedBytes < 1) errors.Add($"{p}:MaxEncodedBytes {o.MaxEncodedBytes} must be at least 1.");
        for (var i = 0; i < o.Mean.Count; i++)
            if (!float.IsFinite(o.Mean[i])) errors.Add($"{p}:Mean:{i} is {o.Mean[i].ToString(CultureInfo.InvariantCulture)}; it must be finite.");
        for (var i = 0; i < o.Std.Count; i++)
            if (!float.IsFinite(o.Std[i]) || o.Std[i] <= 0) errors.Add($"{p}:Std:{i} is {o.Std[i].ToString(CultureInfo.InvariantCulture)}; it must be positive and finite.");
        if (o.Mean.Count is not (0 or 1) && o.Std.Count is not (0 or 1) && o.Mean.Count != o.Std.Count)
            errors.Add($"{p}:Mean has {o.Mean.Count} values and {p}:Std {o.Std.Count}; give one value or one per channel in each.");
        if (channels > 0)
        {
            if (o.Mean.Count is not (0 or 1) && o.Mean.Count != channels)
                errors.Add($"{p}:Mean has {o.Mean.Count} values, but the model's image input has {channels} channel(s); give one value or {channels}.");
            if (o.Std.Count is not (0 or 1) && o.Std.Count != channels)
                errors.Add($"{p}:Std has {o.Std.Count} values, but the model's image input has {channels} channel(s); give one value or {channels}.");
        }
        return errors;
    }

    private static float[] Expand(IList<float> values, int channels, float fallback) =>
        values.Count == 0 ? Enumerable.Repeat(fallback, channels).ToArray()
        : values.Count == 1 ? Enumerable.Repeat(values[0], channels).ToArray()
        : [.. values];
}
