using System.Diagnostics;
using System.Text;
using OnnxTune.Fuzz.Tests.Fuzzing;
using OnnxTune.Training.Data;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Fuzz.Tests.Regressions;

/// <summary>Each test failed before its fix (an untyped exception, a hang or a silent accept).</summary>
public sealed class SafeTensorsRegressionTests
{
    private static byte[] File(string header, int dataBytes = 0) => SafeTensorsMutations.Build(header, new byte[dataBytes]);

    [Fact]
    public void Empty_tensor_name_is_a_format_error_not_an_ArgumentException()
    {
        var e = Assert.Throws<SafeTensorsFormatException>(() =>
            SafeTensorsFile.Parse(File("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "t.safetensors"));
        Assert.Contains("t.safetensors", e.Message);
        Assert.Contains("empty name", e.Message);
    }

    [Theory]
    [InlineData("[\"0\",4]")]
    [InlineData("[null,4]")]
    [InlineData("[0,[4]]")]
    [InlineData("[0,true]")]
    public void Non_numeric_data_offsets_are_a_format_error(string offsets)
    {
        var e = Assert.Throws<SafeTensorsFormatException>(() =>
            SafeTensorsFile.Parse(File($"{{\"w\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{offsets}}}}}", 4), "t.safetensors"));
        Assert.Contains("'w'", e.Message);
        Assert.Contains("data_offsets", e.Message);
    }

    [Theory]
    [InlineData("{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    [InlineData("{\"w\":{\"dtype\":\"\\udc00\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    [InlineData("{\"__metadata__\":{\"k\":\"\\ud800\"},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"\\ud800\"],\"data_offsets\":[0,4]}}")]
    // TryGetProperty("dtype") throws when a later key of the entry (it searches from the end) is a lone surrogate.
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"\\ud800\":1}}")]
    public void Lone_surrogates_in_names_and_strings_are_a_format_error(string header) =>
        Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Parse(File(header, 4), "t.safetensors"));

    [Fact]
    public void Duplicate_metadata_is_a_format_error() =>
        Assert.Contains("__metadata__ appears twice", Assert.Throws<SafeTensorsFormatException>(() =>
            SafeTensorsFile.Parse(File("{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"a\":\"2\"}}"))).Message);

    [Fact]
    public void Header_with_many_tensors_parses_in_linear_time()
    {
        // 100,000 zero-length tensors: the old duplicate check scanned all previous entries (5 x 10^9 comparisons,
        // minutes); with a set it is linear (about a second in a Debug build).
        const int n = 100_000;
        var sb = new StringBuilder("{");
        for (var i = 0; i < n; i++)
            sb.Append(System.Globalization.CultureInfo.InvariantCulture, $"{(i > 0 ? "," : "")}\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        sb.Append('}');
        var bytes = File(sb.ToString());
        var sw = Stopwatch.StartNew();
        var file = SafeTensorsFile.Parse(bytes);
        Assert.Equal(n, file.Tensors.Count);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"Parsing {n} tensors took {sw.Elapsed.TotalSeconds:F1} s.");

        // The same header with the last name repeated is refused, just as fast.
        var dup = File(sb.ToString()[..^1] + ",\"t7\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        Assert.Contains("'t7' appears twice", Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Parse(dup)).Message);
    }

    [Fact]
    public void Data_file_with_zero_samples_and_a_huge_row_is_a_data_error_not_an_OverflowException()
    {
        // 0 x 2^40 elements: no bytes, so the safetensors checks pass, but one row would overflow an int.
        var bytes = File("{\"x\":{\"dtype\":\"F32\",\"shape\":[0,1099511627776],\"data_offsets\":[0,0]}}");
        var file = SafeTensorsFile.Parse(bytes, "data.safetensors");
        var e = Assert.Throws<DataFileException>(() => TensorDataFile.FromFile(file, "data.safetensors", ["x"], null));
        Assert.Equal("x", e.TensorName);
        Assert.Contains("data.safetensors", e.Message);
    }
}
