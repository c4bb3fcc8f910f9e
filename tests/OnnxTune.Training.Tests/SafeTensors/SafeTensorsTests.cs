using System.Buffers.Binary;
using System.Text;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.SafeTensors;

public sealed class SafeTensorsTests
{
    private static SafeTensorsFile Sample() => new(
    [
        SafeTensor.FromFloats("weight", [1f, -2.5f, 3f, float.Epsilon, 0f, 6f], 2, 3),
        SafeTensor.FromDoubles("scale", [Math.PI], 1),
        SafeTensor.FromInt64s("ids", [long.MinValue, 0, long.MaxValue], 3),
        SafeTensor.FromInt32s("counts", [7, -8], 2),
        SafeTensor.FromBools("mask", [true, false, true], 3),
        SafeTensor.FromFloats("scalar", [42f]),
    ], new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode" });

    private static byte[] Build(string header, int dataBytes)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)h.Length);
        h.CopyTo(bytes, 8);
        return bytes;
    }

    [Fact]
    public void Round_trip_keeps_names_types_shapes_values_and_metadata()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("t.safetensors");
        Sample().Write(path);
        var read = SafeTensorsFile.Read(path);
        Assert.Equal("ünïcode", read.Metadata["note"]);
        foreach (var t in Sample().Tensors)
        {
            var r = read.Get(t.Name);
            Assert.Equal(t.DType, r.DType);
            Assert.Equal(t.Shape, r.Shape);
            Assert.Equal(t.Data, r.Data);
        }
        Assert.Equal([1f, -2.5f, 3f, float.Epsilon, 0f, 6f], read.Get("weight").AsSpan<float>().ToArray());
        Assert.Empty(read.Get("scalar").Shape);
        Assert.Equal([true, false, true], read.Get("mask").AsSpan<bool>().ToArray());
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(0UL, (BinaryPrimitives.ReadUInt64LittleEndian(bytes) % 8));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    [Fact]
    public void Reads_a_file_written_by_the_reference_layout()
    {
        // {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} followed by 1.0, 2.0 (as Python's safetensors writes it).
        var bytes = Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ", 8);
        BitConverter.TryWriteBytes(bytes.AsSpan(bytes.Length - 8), 1f);
        BitConverter.TryWriteBytes(bytes.AsSpan(bytes.Length - 4), 2f);
        Assert.Equal([1f, 2f], SafeTensorsFile.Parse(bytes).Get("a").ToFloatArray());
    }

    [Theory]
    [InlineData(4, "header length")]
    [InlineData(20, "truncated")]
    public void Truncated_files_are_refused(int keep, string expected)
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("t.safetensors");
        Sample().Write(path);
        var bytes = File.ReadAllBytes(path).AsSpan(0, keep).ToArray();
        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Parse(bytes, "t.safetensors"));
        Assert.Contains(expected, e.Message);
        Assert.Contains("t.safetensors", e.Message);
    }

    [Fact]
    public void Missing_data_bytes_are_reported_as_truncation()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("t.safetensors");
        Sample().Write(path);
        var bytes = File.ReadAllBytes(path);
        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Parse(bytes.AsSpan(0, bytes.Length - 3)));
        Assert.Contains("truncated", e.Message);
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "overlap")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "truncated")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "gap")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, "not described")]
    [InlineData("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype 'Q4'")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "invalid dim")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "not valid JSON")]
    [InlineData("[1,2]", 0, "does not start")]
    [InlineData("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__.k")]
    public void Malformed_headers_are_refused_naming_the_problem(string header, int dataBytes, string expected)
    {
        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Parse(Build(header, dataBytes), "bad.safetensors"));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Implausible_header_length_is_refused()
    {
        var bytes = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, ulong.MaxValue / 2);
        Assert.Contains("implausible", Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Parse(bytes)).Message);
    }

    [Fact]
    public void Asking_for_the_wrong_type_or_a_missing_tensor_is_a_typed_error()
    {
        var f = Sample();
        Assert.Throws<SafeTensorsFormatException>(() => f.Get("ids").AsSpan<float>());
        Assert.Contains("'nope'", Assert.Throws<SafeTensorsFormatException>(() => f.Get("nope")).Message);
        Assert.Equal([long.MinValue, 0, long.MaxValue], f.Get("ids").ToInt64Array());
        Assert.Equal([7L, -8L], f.Get("counts").ToInt64Array());
    }
}
