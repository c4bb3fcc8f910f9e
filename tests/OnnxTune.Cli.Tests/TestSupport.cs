using System.Text.Json;
using OnnxTune.Cli;

namespace OnnxTune.Cli.Tests;

/// <summary>Runs <c>onnxtune</c> verbs in-process through the real parser, capturing output.</summary>
internal static class CliRunner
{
    public static CliRun Run(string workingDirectory, params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = OnnxTuneCli.Run(args, new CliContext(output, error, workingDirectory));
        return new CliRun(code, output.ToString(), error.ToString(), string.Join(' ', args));
    }
}

internal sealed record CliRun(int ExitCode, string Out, string Error, string CommandLine)
{
    public override string ToString() => $"onnxtune {CommandLine} -> exit {ExitCode}\nstdout:\n{Out}\nstderr:\n{Error}";

    /// <summary>Asserts the exit code, showing the whole run when it differs.</summary>
    public CliRun Expect(int exitCode)
    {
        Assert.True(ExitCode == exitCode, $"expected exit {exitCode}\n{this}");
        return this;
    }

    /// <summary>Asserts a failure whose message contains every fragment.</summary>
    public CliRun ExpectFailure(params string[] fragments)
    {
        Assert.True(ExitCode != 0, $"expected a failure\n{this}");
        foreach (var f in fragments)
            Assert.True(Error.Contains(f, StringComparison.Ordinal), $"stderr should mention '{f}'\n{this}");
        return this;
    }
}

internal static class Repo
{
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (Directory.Exists(Path.Combine(dir.FullName, "tests", "fixtures")))
                    return dir.FullName;
            throw new DirectoryNotFoundException("tests/fixtures was not found above " + AppContext.BaseDirectory);
        }
    }

    public static string Fixtures => Path.Combine(Root, "tests", "fixtures");
}

/// <summary>A temporary folder deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "onnxtune-cli-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string this[string relative] => System.IO.Path.Combine(Path, relative);

    /// <summary>Copies the files of <paramref name="folder"/> (not subfolders) into this folder.</summary>
    public TempDir CopyFrom(string folder)
    {
        foreach (var f in Directory.GetFiles(folder))
            File.Copy(f, System.IO.Path.Combine(Path, System.IO.Path.GetFileName(f)));
        return this;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>One PyTorch parity case (tests/fixtures/parity/&lt;case&gt;/case.json).</summary>
internal sealed class ParityCase
{
    private ParityCase(string folder, JsonElement json)
    {
        Folder = folder;
        Json = json;
    }

    public string Folder { get; }

    public JsonElement Json { get; }

    public string Name => Json.GetProperty("case").GetString()!;

    public static IEnumerable<string> Names =>
        Directory.GetDirectories(Path.Combine(Repo.Fixtures, "parity"))
            .Where(d => File.Exists(Path.Combine(d, "case.json")))
            .Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal)!;

    public static ParityCase Load(string name)
    {
        var folder = Path.Combine(Repo.Fixtures, "parity", name);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "case.json")));
        return new ParityCase(folder, doc.RootElement.Clone());
    }

    /// <summary>The argument vector of a command in case.json, without the leading "onnxtune".</summary>
    public string[] Command(string verb) =>
        Json.GetProperty("commands").GetProperty(verb).EnumerateArray().Skip(1).Select(e => e.GetString()!).ToArray();

    public double[] Doubles(string property) => Json.GetProperty(property).EnumerateArray().Select(e => e.GetDouble()).ToArray();

    public (double Rtol, double Floor) Tolerance
    {
        get
        {
            var t = Json.GetProperty("expected").GetProperty("tolerance");
            return (t.GetProperty("rtol").GetDouble(), t.GetProperty("floor").GetDouble());
        }
    }
}
