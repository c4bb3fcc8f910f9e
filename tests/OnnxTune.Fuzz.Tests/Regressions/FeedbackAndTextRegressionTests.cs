using OnnxTune.Cli.Text;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Fuzz.Tests.Regressions;

public sealed class FeedbackAndTextRegressionTests
{
    private const string Record = "/data/feedback.db record 7f3a";

    [Theory]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[2],\"data\":[1,2]", "not valid JSON")]
    [InlineData("[1,2]", "'tensors' is an array")]
    [InlineData("{\"x\":{\"shape\":[2],\"data\":[1,2]}}", "field 'type'")]
    [InlineData("{\"x\":{\"type\":\"float\",\"data\":[1,2]}}", "field 'shape'")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[2]}}", "field 'data'")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[2],\"data\":[1,2,3]}}", "needs 2")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[-1],\"data\":[]}}", "shape[0]")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[\"2\"],\"data\":[1,2]}}", "shape[0]")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[4294967296,4294967296],\"data\":[]}}", "more elements")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[2],\"data\":[1,\"a\"]}}", "data[1]")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[1],\"data\":[1e999]}}", "data[0]")]
    [InlineData("{\"x\":{\"type\":\"int64\",\"shape\":[1],\"data\":[1.5]}}", "data[0]")]
    [InlineData("{\"x\":{\"type\":7,\"shape\":[1],\"data\":[1]}}", "field 'type'")]
    [InlineData("{\"x\":{\"type\":\"\\ud800\",\"shape\":[1],\"data\":[1]}}", "not a valid string")]
    [InlineData("{\"x\":[]}", "tensor 'x' is an array")]
    [InlineData("{\"x\":{\"type\":\"float\",\"shape\":[1],\"data\":[1],\"\\ud800\":1}}", "field 'type'")]
    public void Corrupt_tensors_column_is_a_typed_error_naming_the_record(string json, string expected)
    {
        var e = Assert.Throws<OnnxTuneException>(() => FeedbackJson.ReadTensors(json, Record));
        Assert.Contains(Record, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("{\"a\":1}", "metadata 'a' is a number")]
    [InlineData("{\"a\":", "not valid JSON")]
    [InlineData("[]", "expected an object")]
    public void Corrupt_metadata_column_is_a_typed_error_naming_the_record(string json, string expected)
    {
        var e = Assert.Throws<OnnxTuneException>(() => FeedbackJson.ReadMetadata(json, Record));
        Assert.Contains(Record, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Tensors_and_metadata_columns_round_trip()
    {
        var t = FeedbackJson.ReadTensors("{\"x\":{\"type\":\"float\",\"shape\":[1,2],\"data\":[0.5,-1]},\"ids\":{\"type\":\"int64\",\"shape\":[0],\"data\":[]}}", Record);
        Assert.Equal([0.5f, -1f], t["x"].FloatData!);
        Assert.Empty(t["ids"].Int64Data!);
        Assert.Equal("", FeedbackJson.ReadMetadata("{\"a\":null}", Record)["a"]);
    }

    [Theory]
    [InlineData("{\"text\":\"a\"}", "field 'label' is missing")]
    [InlineData("{\"text\":\"a\",\"label\":1.5}", "field 'label'")]
    [InlineData("{\"text\":\"a\",\"label\":null}", "field 'label'")]
    [InlineData("{\"text\":5,\"label\":\"x\"}", "field 'text'")]
    [InlineData("{\"label\":\"x\"}", "neither 'text' nor 'tensors'")]
    [InlineData("{\"tensors\":{\"x\":{\"type\":\"float\",\"shape\":[2],\"data\":[1]}},\"label\":0}", "tensor 'x'")]
    [InlineData("[1]", "is an array")]
    [InlineData("{\"text\":\"a\",\"label\":\"\\udc00\"}", "field 'label'")]
    [InlineData("{\"text\":\"a\",\"label\":\"x\",\"\\udc00\":0}", "field 'label'")]
    public void Golden_set_errors_name_the_line_and_the_field(string badLine, string expected)
    {
        using var dir = new TempFolder();
        var path = dir.Write("golden.jsonl", "{\"text\":\"ok\",\"label\":\"greet\"}\n\n" + badLine + "\n");
        var e = Assert.Throws<OnnxTuneException>(() => FeedbackJson.ReadGoldenSet(path));
        Assert.Contains($"'{path}' line 3", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Missing_golden_set_is_a_typed_error() =>
        Assert.Contains("does not exist", Assert.Throws<OnnxTuneException>(() => FeedbackJson.ReadGoldenSet("/nonexistent/golden.jsonl")).Message);

    [Theory]
    [InlineData("{\"text\":\"a\",\"label\":1e999}", "field 'label'")]
    [InlineData("{\"text\":\"a\",\"label\":[1,1e999]}", "field 'label[1]'")]
    [InlineData("{\"text\":\"a\",\"label\":[1,\"x\"]}", "field 'label[1]'")]
    [InlineData("{\"text\":\"\\ud800\",\"label\":\"x\"}", "field 'text'")]
    [InlineData("{\"text\":\"a\",\"label\":\"\\udc00\"}", "field 'label'")]
    [InlineData("{\"label\":\"x\"}", "field 'text'")]
    [InlineData("{\"text\":\"a\",\"label\":{}}", "field 'label'")]
    [InlineData("{\"text\":\"a\",\"label\":\"x\",\"\\ud800\":0}", "expected fields 'text' and 'label'")]
    public void Cli_jsonl_errors_name_the_line_and_the_field(string badLine, string expected)
    {
        using var dir = new TempFolder();
        var path = dir.Write("data.jsonl", "{\"text\":\"ok\",\"label\":\"greet\"}\n" + badLine + "\n");
        var e = Assert.Throws<OnnxTuneException>(() => TextDataFile.Read(path));
        Assert.Contains($"{path}:2", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Cli_csv_errors_name_the_line_and_the_expected_columns()
    {
        using var dir = new TempFolder();
        var path = dir.Write("data.csv", "text,label\nhello,greet\na,b,c\n");
        var e = Assert.Throws<OnnxTuneException>(() => TextDataFile.Read(path));
        Assert.Contains($"{path}:3", e.Message);
        Assert.Contains("text, label", e.Message);

        var noText = dir.Write("no-text.csv", "words,label\nhello,greet\n");
        Assert.Contains("'text' column", Assert.Throws<OnnxTuneException>(() => TextDataFile.Read(noText)).Message);
    }
}
