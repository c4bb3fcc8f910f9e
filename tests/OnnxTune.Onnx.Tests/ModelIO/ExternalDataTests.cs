using System.Runtime.InteropServices;
using global::Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Onnx.Tests.TestUtilities;

namespace OnnxTune.Onnx.Tests.ModelIO;

public sealed class ExternalDataTests
{
    private static readonly float[] W = [1f, -2f, 0.5f];

    /// <summary>Writes the sample model with 'w' external at <paramref name="location"/> (offset/length as given).</summary>
    private static string WriteModel(TempDirectory dir, string location, long? offset, long? length, Action<ModelProto>? edit = null)
    {
        var model = SampleModels.AddRelu();
        SampleModels.MakeExternal(model.Graph.Initializer.Single(t => t.Name == "w"), location, offset, length);
        edit?.Invoke(model);
        var path = dir.Combine("model.onnx");
        OnnxModelWriter.Save(model, path);
        return path;
    }

    private static byte[] WithPadding(int before, ReadOnlySpan<float> values, int after)
    {
        var data = MemoryMarshal.AsBytes(values).ToArray();
        var bytes = new byte[before + data.Length + after];
        bytes.AsSpan(0, before).Fill(0xAB);
        data.CopyTo(bytes, before);
        bytes.AsSpan(before + data.Length).Fill(0xCD);
        return bytes;
    }

    [Fact]
    public void External_tensor_with_offset_and_length_is_read_and_inlined()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), WithPadding(16, W, 8));
        var path = WriteModel(dir, "weights.bin", offset: 16, length: 12);

        var model = OnnxModelReader.Load(path);

        var w = model.Graph.Initializer.Single(t => t.Name == "w");
        Assert.Equal(W, TensorProtos.ToFloatArray(w));
        Assert.Empty(w.ExternalData);
        Assert.Equal(TensorProto.Types.DataLocation.Default, w.DataLocation);
        // The other initializer was inline and stays untouched.
        Assert.Equal([0L, 1L], TensorProtos.ToInt64Array(model.Graph.Initializer.Single(t => t.Name == "axes")));
    }

    [Fact]
    public void External_tensor_without_length_reads_to_end_of_file_from_offset()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), WithPadding(4, W, 0));
        var path = WriteModel(dir, "weights.bin", offset: 4, length: null);

        var model = OnnxModelReader.Load(path);

        Assert.Equal(W, TensorProtos.ToFloatArray(model.Graph.Initializer.Single(t => t.Name == "w")));
    }

    [Fact]
    public void External_tensor_without_offset_or_length_reads_the_whole_file_in_a_subfolder()
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.Combine("data"));
        File.WriteAllBytes(dir.Combine("data", "w.bin"), MemoryMarshal.AsBytes<float>(W).ToArray());
        var path = WriteModel(dir, "data/w.bin", offset: null, length: null);

        var model = OnnxModelReader.Load(path);

        Assert.Equal(W, TensorProtos.ToFloatArray(model.Graph.Initializer.Single(t => t.Name == "w")));
    }

    [Fact]
    public void External_tensor_inside_a_node_attribute_is_inlined()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("c.bin"), MemoryMarshal.AsBytes<float>(W).ToArray());
        var path = WriteModel(dir, "c.bin", 0, 12, m =>
        {
            var t = TensorProtos.Float("const_value", [0f, 0f, 0f], 3);
            SampleModels.MakeExternal(t, "c.bin", 0, 12);
            var node = new NodeProto { Name = "const0", OpType = "Constant" };
            node.Output.Add("c");
            node.Attribute.Add(Attr.Tensor("value", t));
            m.Graph.Node.Insert(0, node);
        });

        var model = OnnxModelReader.Load(path);

        Assert.Equal(W, TensorProtos.ToFloatArray(model.Graph.Node[0].Find("value")!.T));
    }

    [Fact]
    public void Missing_external_file_names_the_tensor_and_the_file()
    {
        using var dir = new TempDirectory();
        var path = WriteModel(dir, "missing_weights.bin", 0, 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("missing_weights.bin", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void External_range_past_end_of_file_names_tensor_offset_and_length()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), new byte[10]);
        var path = WriteModel(dir, "weights.bin", offset: 4, length: 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("offset 4", e.Message);
        Assert.Contains("length 12", e.Message);
        Assert.Contains("10 bytes", e.Message);
    }

    [Fact]
    public void Negative_offset_is_rejected()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), new byte[12]);
        var path = WriteModel(dir, "weights.bin", offset: -4, length: 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));
        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void External_tensor_without_location_is_rejected()
    {
        using var dir = new TempDirectory();
        var path = WriteModel(dir, "weights.bin", 0, 12, m =>
        {
            var w = m.Graph.Initializer.Single(t => t.Name == "w");
            w.ExternalData.Remove(w.ExternalData.Single(kv => kv.Key == "location"));
        });

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("'location'", e.Message);
    }

    [Fact]
    public void External_data_when_parsing_bytes_without_base_directory_is_rejected()
    {
        var model = SampleModels.AddRelu();
        SampleModels.MakeExternal(model.Graph.Initializer.Single(t => t.Name == "w"), "weights.bin", 0, 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Parse(OnnxModelWriter.ToBytes(model), "mem.onnx"));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("weights.bin", e.Message);
        Assert.Contains("not loaded from a file", e.Message);
    }

    [Fact]
    public void Location_escaping_the_model_folder_is_rejected()
    {
        using var outer = new TempDirectory();
        Directory.CreateDirectory(outer.Combine("model"));
        File.WriteAllBytes(outer.Combine("secret.bin"), MemoryMarshal.AsBytes<float>(W).ToArray());
        var model = SampleModels.AddRelu();
        SampleModels.MakeExternal(model.Graph.Initializer.Single(t => t.Name == "w"), "../secret.bin", 0, 12);
        var path = outer.Combine("model", "model.onnx");
        OnnxModelWriter.Save(model, path);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("../secret.bin", e.Message);
        Assert.Contains("outside", e.Message);
    }

    [Theory]
    [InlineData("a/../../secret.bin")]
    [InlineData("./../secret.bin")]
    [InlineData("a/b/../../../secret.bin")]
    public void Location_escaping_after_normalisation_is_rejected(string location)
    {
        using var outer = new TempDirectory();
        Directory.CreateDirectory(outer.Combine("model", "a", "b"));
        File.WriteAllBytes(outer.Combine("secret.bin"), MemoryMarshal.AsBytes<float>(W).ToArray());
        var model = SampleModels.AddRelu();
        SampleModels.MakeExternal(model.Graph.Initializer.Single(t => t.Name == "w"), location, 0, 12);
        var path = outer.Combine("model", "model.onnx");
        OnnxModelWriter.Save(model, path);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains(location, e.Message);
    }

    [Fact]
    public void Location_with_dot_dot_that_stays_inside_the_folder_is_read()
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.Combine("a"));
        Directory.CreateDirectory(dir.Combine("data"));
        File.WriteAllBytes(dir.Combine("data", "w.bin"), MemoryMarshal.AsBytes<float>(W).ToArray());
        var path = WriteModel(dir, "a/../data/w.bin", 0, 12);

        var model = OnnxModelReader.Load(path);

        Assert.Equal(W, TensorProtos.ToFloatArray(model.Graph.Initializer.Single(t => t.Name == "w")));
    }

    [Theory]
    [InlineData("")]
    [InlineData(".")]
    [InlineData("a/..")]
    public void Location_naming_the_model_folder_itself_is_rejected(string location)
    {
        using var dir = new TempDirectory();
        var path = WriteModel(dir, location, 0, 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
    }

    [Fact]
    public void Location_that_is_a_subfolder_is_reported_as_not_found()
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.Combine("data"));
        var path = WriteModel(dir, "data", 0, 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void Absolute_location_is_rejected()
    {
        using var outer = new TempDirectory();
        var secret = outer.Combine("secret.bin");
        File.WriteAllBytes(secret, MemoryMarshal.AsBytes<float>(W).ToArray());
        using var dir = new TempDirectory();
        var path = WriteModel(dir, secret, 0, 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains(secret, e.Message);
        Assert.Contains("absolute", e.Message);
    }

    [Theory]
    [InlineData(@"\\server\share\w.bin")]
    [InlineData(@"C:\w.bin")]
    [InlineData("c:w.bin")]
    public void Windows_style_absolute_location_is_rejected_on_every_platform(string location)
    {
        using var dir = new TempDirectory();
        var path = WriteModel(dir, location, 0, 12);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("absolute", e.Message);
    }

    [Fact]
    public void Non_numeric_offset_is_a_format_exception_naming_the_tensor()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), new byte[12]);
        var path = WriteModel(dir, "weights.bin", 0, 12, m =>
        {
            var w = m.Graph.Initializer.Single(t => t.Name == "w");
            w.ExternalData.Single(kv => kv.Key == "offset").Value = "zero";
        });

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("offset", e.Message);
    }

    [Theory]
    [InlineData("offset", "1e3")]
    [InlineData("length", "twelve")]
    [InlineData("length", "")]
    [InlineData("offset", "99999999999999999999999")]
    public void Non_integer_offset_or_length_names_the_tensor_the_field_and_the_value(string field, string value)
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), new byte[12]);
        var path = WriteModel(dir, "weights.bin", 0, 12, m =>
        {
            var w = m.Graph.Initializer.Single(t => t.Name == "w");
            w.ExternalData.Single(kv => kv.Key == field).Value = value;
        });

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains($"'{field}'", e.Message);
        Assert.Contains($"'{value}'", e.Message);
    }

    [Fact]
    public void Negative_length_is_rejected_instead_of_reading_to_the_end()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), MemoryMarshal.AsBytes<float>(W).ToArray());
        var path = WriteModel(dir, "weights.bin", offset: 0, length: -1);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("length", e.Message);
    }

    [Theory]
    [InlineData(long.MaxValue, 12L)]
    [InlineData(4L, long.MaxValue)]
    [InlineData(13L, null)]
    public void Offset_or_length_so_large_they_would_overflow_are_past_the_end(long offset, long? length)
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.Combine("weights.bin"), new byte[12]);
        var path = WriteModel(dir, "weights.bin", offset, length);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("past the end", e.Message);
    }
}
