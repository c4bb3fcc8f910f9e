using System.Text.Json;

namespace OnnxTune.Migration.Tests;

/// <summary>The ORT-style folders of tests/fixtures/ortimport and their reference.json (written by tests/ortimport/make_ort_fixtures.py).</summary>
internal static class Fixtures
{
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (Directory.Exists(Path.Combine(dir.FullName, "tests", "fixtures", "ortimport")))
                    return Path.Combine(dir.FullName, "tests", "fixtures", "ortimport");
            throw new DirectoryNotFoundException("tests/fixtures/ortimport was not found above " + AppContext.BaseDirectory);
        }
    }

    public static string Folder(string name) => Path.Combine(Root, name);

    public static JsonElement Reference(string name) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder(name), "reference.json"))).RootElement;

    public static float[] Floats(JsonElement bits) => bits.EnumerateArray().Select(b => BitConverter.UInt32BitsToSingle(b.GetUInt32())).ToArray();

    /// <summary>Copies a fixture folder so a test may change it.</summary>
    public static string CopyTo(string name, string target)
    {
        var source = Folder(name);
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            var dest = Path.Combine(target, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
            File.Copy(file, dest);
        }
        return target;
    }
}

internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "onnxtune-migration-" + Guid.NewGuid().ToString("N"));

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
