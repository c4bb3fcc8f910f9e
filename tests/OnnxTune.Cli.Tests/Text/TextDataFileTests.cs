using OnnxTune.Cli.Text;

namespace OnnxTune.Cli.Tests.Text;

public sealed class TextDataFileTests
{
    [Fact]
    public void Csv_handles_quotes_commas_newlines_and_a_bom()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["d.csv"], "\uFEFFid,Text,label\r\n1,\"hello, world\",greet\r\n2,\"she said \"\"hi\"\"\nthen left\",story\r\n3,plain,2.5\r\n");
        var rows = TextDataFile.Read(dir["d.csv"]);
        Assert.Equal(3, rows.Count);
        Assert.Equal(("hello, world", "greet", 2), (rows[0].Text, rows[0].Label, rows[0].Line));
        Assert.Equal(("she said \"hi\"\nthen left", "story", 3), (rows[1].Text, rows[1].Label, rows[1].Line));
        Assert.Equal(5, rows[2].Line);
        Assert.Equal([2.5f], rows[2].Values!);
        Assert.Null(rows[0].Values);
    }

    [Fact]
    public void Json_lines_take_string_number_and_array_labels_and_skip_blank_lines()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["d.jsonl"], "{\"text\":\"a\",\"label\":\"x\"}\n\n{\"text\":\"b\",\"label\":3}\n{\"text\":\"c\",\"label\":[1,2.5]}\n");
        var rows = TextDataFile.Read(dir["d.jsonl"]);
        Assert.Equal(["a", "b", "c"], rows.Select(r => r.Text));
        Assert.Equal(("x", 1), (rows[0].Label, rows[0].Line));
        Assert.Equal(("3", 3), (rows[1].Label, rows[1].Line));
        Assert.Equal([3f], rows[1].Values!);
        Assert.Equal([1f, 2.5f], rows[2].Values!);
    }

    [Fact]
    public void Malformed_files_are_refused_with_file_and_line()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["q.csv"], "text,label\n\"open,x\n");
        Assert.Contains("q.csv:2: a quoted field is not closed", Assert.Throws<OnnxTuneException>(() => TextDataFile.Read(dir["q.csv"])).Message);
        File.WriteAllText(dir["f.csv"], "text,label\na,b,c\n");
        Assert.Contains("f.csv:2: 3 fields, but the header has 2", Assert.Throws<OnnxTuneException>(() => TextDataFile.Read(dir["f.csv"])).Message);
        File.WriteAllText(dir["t.jsonl"], "{\"label\":\"x\"}\n");
        Assert.Contains("t.jsonl:1: field 'text' is missing", Assert.Throws<OnnxTuneException>(() => TextDataFile.Read(dir["t.jsonl"])).Message);
        File.WriteAllText(dir["e.jsonl"], "\n");
        Assert.Contains("holds no examples", Assert.Throws<OnnxTuneException>(() => TextDataFile.Read(dir["e.jsonl"])).Message);
    }

    [Fact]
    public void Macro_f1_follows_scikit_learn()
    {
        // y_true = [0,0,1,1,2], y_pred = [0,1,1,1,0]: F1 per class 0.5, 0.8, 0 -> macro 0.4333 (sklearn f1_score average="macro").
        var m = new ClassificationMetrics();
        foreach (var (t, p) in new[] { (0, 0), (0, 1), (1, 1), (1, 1), (2, 0) }) m.Add(t, p);
        Assert.Equal(0.6, m.Accuracy, 12);
        Assert.Equal((0.5 + 0.8 + 0) / 3, m.MacroF1, 12);
        Assert.Equal(1, ClassificationMetrics.ArgMax([0.1f, 3f, 3f, -1f]));
    }
}
