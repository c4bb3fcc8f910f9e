using System.Globalization;
using System.IO.Compression;
using SkiaSharp;

namespace OnnxTune.Hosting.Images.Tests;

/// <summary>The UCI optical digits as scikit-learn ships them (samples/datasets/digits): 1,797 8×8 images, values 0..16.</summary>
internal static class Digits
{
    private static readonly Lazy<IReadOnlyList<(byte[] Pixels, int Label)>> All = new(Load);

    public static IReadOnlyList<(byte[] Pixels, int Label)> Rows => All.Value;

    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "OnnxTune.sln"))) return dir.FullName;
        throw new InvalidOperationException("OnnxTune.sln not found above " + AppContext.BaseDirectory);
    }

    private static List<(byte[], int)> Load()
    {
        var path = Path.Combine(RepositoryRoot(), "samples", "datasets", "digits", "digits.csv.gz");
        using var reader = new StreamReader(new GZipStream(File.OpenRead(path), CompressionMode.Decompress));
        var rows = new List<(byte[], int)>();
        while (reader.ReadLine() is { Length: > 0 } line)
        {
            var v = line.Split(',').Select(s => byte.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            if (v.Length != 65) throw new InvalidDataException($"digits.csv.gz line {rows.Count + 1} has {v.Length} values");
            rows.Add((v[..64], v[64]));
        }
        return rows;
    }

    /// <summary>The 8-bit gray level a digit pixel is stored as in its PNG: round(v · 255 / 16).</summary>
    public static byte Gray(byte v) => (byte)Math.Round(v * 255.0 / 16.0, MidpointRounding.AwayFromZero);

    /// <summary>Encodes an 8×8 digit as an 8-bit grayscale PNG.</summary>
    public static byte[] Png(byte[] pixels)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(8, 8, SKColorType.Gray8, SKAlphaType.Opaque));
        var span = bitmap.GetPixelSpan();
        for (var y = 0; y < 8; y++)
            for (var x = 0; x < 8; x++)
                span[y * bitmap.RowBytes + x] = Gray(pixels[y * 8 + x]);
        return Encode(bitmap, SKEncodedImageFormat.Png);
    }

    /// <summary>An RGBA image from (r, g, b, a) tuples, row-major.</summary>
    public static byte[] Rgba(int width, int height, (byte R, byte G, byte B, byte A)[] pixels, SKEncodedImageFormat format = SKEncodedImageFormat.Png)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        var span = bitmap.GetPixelSpan();
        for (var i = 0; i < pixels.Length; i++)
        {
            var at = i / width * bitmap.RowBytes + i % width * 4;
            (span[at], span[at + 1], span[at + 2], span[at + 3]) = pixels[i];
        }
        return Encode(bitmap, format);
    }

    private static byte[] Encode(SKBitmap bitmap, SKEncodedImageFormat format)
    {
        using var data = bitmap.Encode(format, 100) ?? throw new InvalidOperationException($"encoding {format} failed");
        return data.ToArray();
    }
}
