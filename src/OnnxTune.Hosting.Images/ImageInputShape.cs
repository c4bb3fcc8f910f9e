namespace OnnxTune.Hosting.Images;

/// <summary>The image input a preprocessor fills: its name, layout, channel count (1 or 3) and size.</summary>
/// <param name="InputName">The model input.</param>
/// <param name="Layout">NCHW or NHWC.</param>
/// <param name="Channels">1 (grayscale) or 3 (colour).</param>
/// <param name="Height">Rows.</param>
/// <param name="Width">Columns.</param>
public sealed record ImageInputShape(string InputName, ImageLayout Layout, int Channels, int Height, int Width)
{
    /// <summary>Gets the number of values of one image.</summary>
    public int ElementsPerImage => Channels * Height * Width;

    /// <summary>The tensor shape of <paramref name="batch"/> images.</summary>
    public long[] TensorShape(int batch) => Layout == ImageLayout.Nchw
        ? [batch, Channels, Height, Width]
        : [batch, Height, Width, Channels];
}
