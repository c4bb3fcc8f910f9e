using OnnxTune.Text.Labels;

namespace OnnxTune.Text.Tests;

public sealed class LabelMapTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxtune-text-tests", Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir))
            Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void From_labels_is_distinct_and_ordinal_sorted()
    {
        var map = LabelMap.FromLabels(["transfer", "balance", "transfer", "Alarm", "balance"]);
        Assert.Equal(["Alarm", "balance", "transfer"], map.Names);
        Assert.Equal(3, map.Count);
        Assert.Equal(1, map.IndexOf("balance"));
        Assert.Equal("transfer", map.NameOf(2));
        Assert.Equal([2, 0, 1], map.IndicesOf(["transfer", "Alarm", "balance"]));
        Assert.True(map.TryGetIndex("Alarm", out var i) && i == 0);
        Assert.False(map.Contains("alarm"));
    }

    [Fact]
    public void Unknown_label_error_names_the_label()
    {
        var map = new LabelMap(["a", "b"]);
        var e = Assert.Throws<UnknownLabelException>(() => map.IndexOf("pay_bill"));
        Assert.Equal("pay_bill", e.Label);
        Assert.Contains("'pay_bill'", e.Message, StringComparison.Ordinal);
        Assert.Throws<UnknownLabelException>(() => map.IndicesOf(["a", "zzz"]));
        Assert.Throws<ArgumentOutOfRangeException>(() => map.NameOf(2));
        Assert.Throws<ArgumentOutOfRangeException>(() => map.NameOf(-1));
    }

    [Fact]
    public void Save_and_load_round_trip_keeps_order()
    {
        var map = new LabelMap(["zeta", "alpha", "mid é"]);
        var path = Path.Combine(_dir, "labels.json");
        map.Save(path);
        var loaded = LabelMap.Load(path);
        Assert.Equal(map.Names, loaded.Names);
        Assert.Equal(2, loaded.IndexOf("mid é"));
        Assert.Contains("\"format_version\": 1", File.ReadAllText(path), StringComparison.Ordinal);
        Assert.Single(Directory.GetFiles(_dir));
    }

    [Fact]
    public void Duplicate_or_empty_names_are_rejected()
    {
        var e = Assert.Throws<LabelMapFormatException>(() => new LabelMap(["a", "b", "a"]));
        Assert.Contains("'a'", e.Message, StringComparison.Ordinal);
        Assert.Throws<LabelMapFormatException>(() => new LabelMap(["a", ""]));
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("{\"format_version\":1}")]
    [InlineData("{\"format_version\":2,\"labels\":[\"a\"]}")]
    [InlineData("{\"format_version\":1,\"labels\":[\"a\",\"a\"]}")]
    public void Malformed_files_are_typed_errors_naming_the_file(string json)
    {
        Directory.CreateDirectory(_dir);
        var path = Path.Combine(_dir, "bad.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<LabelMapFormatException>(() => LabelMap.Load(path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_file_is_a_typed_error()
    {
        var path = Path.Combine(_dir, "none.json");
        Assert.Contains(path, Assert.Throws<LabelMapFormatException>(() => LabelMap.Load(path)).Message, StringComparison.Ordinal);
    }
}
