using SkiaSharp;

namespace OnnxTune.Hosting.Images.Tests;

/// <summary>Decoding, channel order, normalisation and layout against hand-computed values, and the typed errors.</summary>
public sealed class ImagePreprocessorTests
{
    // A 2×2 RGBA image: red, green / blue, (10, 20, 30) half transparent.
    private static readonly (byte, byte, byte, byte)[] Quad = [(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255), (10, 20, 30, 128)];

    private static ImagePreprocessor Create(int channels, int h, int w, ImageLayout layout = ImageLayout.Nchw, Action<ImagePreprocessingOptions>? configure = null)
    {
        var o = new ImagePreprocessingOptions { Layout = layout };
        configure?.Invoke(o);
        return new ImagePreprocessor(new ImageInputShape("x", layout, channels, h, w), o);
    }

    [Fact]
    public void Rgb_nchw_scales_by_1_over_255_and_normalises_per_channel_like_torchvision()
    {
        var p = Create(3, 2, 2, configure: o =>
        {
            foreach (var m in new[] { 0.485f, 0.456f, 0.406f }) o.Mean.Add(m);
            foreach (var s in new[] { 0.229f, 0.224f, 0.225f }) o.Std.Add(s);
        });
        var t = p.Preprocess(Digits.Rgba(2, 2, Quad));
        Assert.Equal([1L, 3, 2, 2], t.Shape);
        // Alpha is dropped, the colour kept (PIL convert("RGB")): channel planes R, G, B; (v/255 - mean) / std.
        static float N(byte v, float mean, float std) => (v * (1f / 255f) - mean) / std;
        float[] expected =
        [
            N(255, 0.485f, 0.229f), N(0, 0.485f, 0.229f), N(0, 0.485f, 0.229f), N(10, 0.485f, 0.229f),
            N(0, 0.456f, 0.224f), N(255, 0.456f, 0.224f), N(0, 0.456f, 0.224f), N(20, 0.456f, 0.224f),
            N(0, 0.406f, 0.225f), N(0, 0.406f, 0.225f), N(255, 0.406f, 0.225f), N(30, 0.406f, 0.225f),
        ];
        Assert.Equal(expected, t.FloatData);
        Assert.Equal(2.2489083f, t.FloatData![0], 5);   // (1 - 0.485) / 0.229
    }

    [Fact]
    public void Nhwc_and_bgr_reorder_the_same_values()
    {
        var t = Create(3, 2, 2, ImageLayout.Nhwc, o => o.ChannelOrder = ImageChannelOrder.Bgr).Preprocess(Digits.Rgba(2, 2, Quad));
        Assert.Equal([1L, 2, 2, 3], t.Shape);
        static float V(byte v) => v * (1f / 255f);
        Assert.Equal([V(0), V(0), V(255), V(0), V(255), V(0), V(255), V(0), V(0), V(30), V(20), V(10)], t.FloatData!);
    }

    [Fact]
    public void One_channel_is_luma_and_gray_images_pass_unchanged()
    {
        var t = Create(1, 2, 2, configure: o => { o.Mean.Add(0.5f); o.Std.Add(0.25f); }).Preprocess(Digits.Rgba(2, 2, Quad));
        Assert.Equal([1L, 1, 2, 2], t.Shape);
        static float L(float r, float g, float b) => ((0.299f * r + 0.587f * g + 0.114f * b) * (1f / 255f) - 0.5f) / 0.25f;
        Assert.Equal([L(255, 0, 0), L(0, 255, 0), L(0, 0, 255), L(10, 20, 30)], t.FloatData!);

        var digit = Digits.Rows[0].Pixels;
        var gray = Create(1, 8, 8).Preprocess(Digits.Png(digit));
        Assert.Equal(digit.Select(v => Digits.Gray(v) * (1f / 255f)), gray.FloatData!);
        // A gray image into a colour model: three equal planes.
        var rgb = Create(3, 8, 8).Preprocess(Digits.Png(digit));
        Assert.Equal(gray.FloatData, rgb.FloatData![..64]);
        Assert.Equal(gray.FloatData, rgb.FloatData![128..]);
    }

    [Fact]
    public void Images_of_another_size_are_resized_to_the_input()
    {
        // 4×4 of 2×2 blocks: nearest-neighbour downscaling to 2×2 picks one pixel per block.
        var pixels = new (byte, byte, byte, byte)[16];
        for (var i = 0; i < 16; i++)
        {
            var block = (byte)((i / 8) * 2 + (i % 4) / 2);
            pixels[i] = ((byte)(block * 60), (byte)(block * 60), (byte)(block * 60), 255);
        }
        var png = Digits.Rgba(4, 4, pixels);
        var nearest = Create(1, 2, 2, configure: o => o.Interpolation = ImageInterpolation.Nearest).Preprocess(png);
        Assert.Equal(new float[] { 0, 60, 120, 180 }.Select(v => v * (1f / 255f)), nearest.FloatData!);
        // Upscaling 2×2 → 4×4 bilinearly keeps values within the source range and corners near their pixel.
        var up = Create(1, 4, 4).Preprocess(Digits.Rgba(2, 2, [(0, 0, 0, 255), (255, 255, 255, 255), (0, 0, 0, 255), (255, 255, 255, 255)]));
        Assert.Equal([1L, 1, 4, 4], up.Shape);
        Assert.All(up.FloatData!, v => Assert.InRange(v, 0f, 1f));
        Assert.True(up.FloatData![0] < 0.1f && up.FloatData[3] > 0.9f, string.Join(", ", up.FloatData));
        Assert.True(up.FloatData[1] < up.FloatData[2], "values rise from left to right");
    }

    [Fact]
    public void Jpeg_decodes_close_to_its_source()
    {
        var pixels = Enumerable.Range(0, 64).Select(i => ((byte)(i * 4), (byte)(i * 4), (byte)(i * 4), (byte)255)).ToArray();
        var t = Create(1, 8, 8).Preprocess(Digits.Rgba(8, 8, pixels, SKEncodedImageFormat.Jpeg));
        for (var i = 0; i < 64; i++) Assert.InRange(t.FloatData![i] - i * 4 / 255f, -0.05f, 0.05f);
    }

    [Fact]
    public void Batch_stacks_images_in_order()
    {
        var p = Create(1, 8, 8);
        var images = Digits.Rows.Take(3).Select(r => (ReadOnlyMemory<byte>)Digits.Png(r.Pixels)).ToList();
        var batch = p.PreprocessBatch(images);
        Assert.Equal([3L, 1, 8, 8], batch.Shape);
        for (var i = 0; i < 3; i++) Assert.Equal(p.Preprocess(images[i].Span).FloatData, batch.FloatData![(i * 64)..((i + 1) * 64)]);
    }

    [Fact]
    public void Empty_corrupt_truncated_and_non_image_bytes_are_typed_errors_naming_the_field()
    {
        var p = Create(1, 8, 8);
        var png = Digits.Png(Digits.Rows[0].Pixels);

        var empty = Assert.Throws<ImageDecodingException>(() => p.Preprocess([]));
        Assert.Equal((ImageErrorKind.Empty, "encodedImage"), (empty.Kind, empty.Field));

        var text = Assert.Throws<ImageDecodingException>(() => p.Preprocess("definitely not a picture"u8));
        Assert.Equal(ImageErrorKind.Undecodable, text.Kind);
        Assert.Contains("not an image format", text.Message, StringComparison.Ordinal);

        var truncated = Assert.Throws<ImageDecodingException>(() => p.Preprocess(png.AsSpan(0, png.Length / 2)));
        Assert.Equal(ImageErrorKind.Undecodable, truncated.Kind);

        var damaged = png.ToArray();
        damaged.AsSpan(41, damaged.Length - 41 - 12).Fill(0x5A);   // the compressed pixels (IDAT) overwritten
        Assert.Equal(ImageErrorKind.Undecodable, Assert.Throws<ImageDecodingException>(() => p.Preprocess(damaged)).Kind);

        // In a batch the field names the image.
        var inBatch = Assert.Throws<ImageDecodingException>(() => p.PreprocessBatch([png, png, "junk"u8.ToArray()]));
        Assert.Equal("images[2]", inBatch.Field);
    }

    [Fact]
    public void Too_many_pixels_is_refused_from_the_header_before_decoding()
    {
        var p = Create(1, 8, 8, configure: o => o.MaxPixels = 8 * 8);
        Assert.Equal(64, p.Preprocess(Digits.Png(Digits.Rows[0].Pixels)).Length);
        var big = Digits.Rgba(9, 8, Enumerable.Repeat(((byte)1, (byte)2, (byte)3, (byte)255), 72).ToArray());
        var e = Assert.Throws<ImageDecodingException>(() => p.Preprocess(big));
        Assert.Equal(ImageErrorKind.TooManyPixels, e.Kind);
        Assert.Contains("9x8 = 72 pixels", e.Message, StringComparison.Ordinal);

        // A decompression bomb: a PNG header declaring 60000×60000 (3.6 gigapixels) with a tiny body. The default
        // limit refuses it without allocating the 14 GB it would decode to.
        var bomb = PngWithSize(Digits.Png(Digits.Rows[0].Pixels), 60000, 60000);
        var before = GC.GetTotalAllocatedBytes(precise: true);
        var b = Assert.Throws<ImageDecodingException>(() => Create(1, 8, 8).Preprocess(bomb));
        Assert.Equal(ImageErrorKind.TooManyPixels, b.Kind);
        Assert.True(GC.GetTotalAllocatedBytes(precise: true) - before < 1 << 20);

        var bytes = Assert.Throws<ImageDecodingException>(() => Create(1, 8, 8, configure: o => o.MaxEncodedBytes = 10).Preprocess(bomb));
        Assert.Equal(ImageErrorKind.TooManyBytes, bytes.Kind);
    }

    [Fact]
    public void Options_that_do_not_fit_the_shape_are_rejected_naming_the_option()
    {
        var e = Assert.Throws<ArgumentException>(() => Create(1, 8, 8, configure: o => { o.Mean.Add(0.1f); o.Mean.Add(0.2f); o.Mean.Add(0.3f); }));
        Assert.Contains("ImageClassification:Mean has 3 values", e.Message, StringComparison.Ordinal);
        Assert.Contains("Std:0", Assert.Throws<ArgumentException>(() => Create(3, 8, 8, configure: o => o.Std.Add(0))).Message, StringComparison.Ordinal);
        Assert.Contains("4 channels", Assert.Throws<ArgumentException>(() => Create(4, 8, 8)).Message, StringComparison.Ordinal);
        Assert.Contains("Scale", Assert.Throws<ArgumentException>(() => Create(1, 8, 8, configure: o => o.Scale = float.NaN)).Message, StringComparison.Ordinal);
    }

    /// <summary>Rewrites a PNG's IHDR width and height (and the chunk's CRC), so only the header lies.</summary>
    private static byte[] PngWithSize(byte[] png, int width, int height)
    {
        var b = png.ToArray();
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(16), width);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(20), height);
        var crc = Crc32(b.AsSpan(12, 17));   // chunk type + data
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(29), crc);
        return b;
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var d in data)
        {
            crc ^= d;
            for (var k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }
}
