using System.Globalization;
using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Hosting;

/// <summary>One promoted model version on disk.</summary>
/// <param name="Version">The version number (1, 2, ...).</param>
/// <param name="Directory">The version folder.</param>
public sealed record ModelVersionInfo(int Version, string Directory)
{
    /// <summary>Gets the inference model file.</summary>
    public string ModelPath => Path.Combine(Directory, ModelVersionStore.ModelFileName);

    /// <summary>Gets the training checkpoint folder.</summary>
    public string CheckpointPath => Path.Combine(Directory, ModelVersionStore.CheckpointFolderName);

    /// <summary>Gets the metrics file.</summary>
    public string MetricsPath => Path.Combine(Directory, ModelVersionStore.MetricsFileName);

    /// <summary>Gets the gate decision file.</summary>
    public string DecisionPath => Path.Combine(Directory, ModelVersionStore.DecisionFileName);
}

/// <summary>The rollback target is not a kept version.</summary>
public sealed class ModelVersionNotFoundException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public ModelVersionNotFoundException(string message) : base(message) { }
}

/// <summary>
/// Promoted model versions: one folder per version (<c>v000001/</c> with <c>model.onnx</c>, <c>checkpoint/</c>,
/// <c>metrics.json</c>, <c>decision.json</c>), each written into a temp folder, flushed and renamed into place,
/// plus a <c>current</c> pointer file replaced atomically. Keeps the last N versions (and always the current one).
/// </summary>
public sealed class ModelVersionStore : IDisposable
{
    /// <summary>Model file name inside a version folder.</summary>
    public const string ModelFileName = "model.onnx";
    /// <summary>Checkpoint folder name inside a version folder.</summary>
    public const string CheckpointFolderName = "checkpoint";
    /// <summary>Metrics file name inside a version folder.</summary>
    public const string MetricsFileName = "metrics.json";
    /// <summary>Decision file name inside a version folder.</summary>
    public const string DecisionFileName = "decision.json";
    /// <summary>Pointer file naming the serving version.</summary>
    public const string CurrentFileName = "current";

    private const string TempPrefix = ".tmp-";
    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>Opens (creating if needed) a store under <paramref name="root"/> and removes leftovers of interrupted writes.</summary>
    public ModelVersionStore(string root, int keepVersions)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        ArgumentOutOfRangeException.ThrowIfLessThan(keepVersions, 1);
        Root = Path.GetFullPath(root);
        KeepVersions = keepVersions;
        Directory.CreateDirectory(Root);
        foreach (var leftover in Directory.EnumerateDirectories(Root, TempPrefix + "*"))
            TryDeleteDirectory(leftover);
    }

    /// <summary>Gets the store folder.</summary>
    public string Root { get; }

    /// <summary>Gets how many versions are kept.</summary>
    public int KeepVersions { get; }

    /// <summary>Called by rollback to load the target before the pointer moves; set by the hosting layer.</summary>
    internal IVersionActivator? Activator { get; set; }

    /// <summary>Lists complete versions, oldest first (temp folders and incomplete folders are ignored).</summary>
    public IReadOnlyList<ModelVersionInfo> ListVersions()
    {
        var list = new List<ModelVersionInfo>();
        foreach (var dir in Directory.EnumerateDirectories(Root))
            if (TryParseVersion(Path.GetFileName(dir), out var v) && File.Exists(Path.Combine(dir, ModelFileName)))
                list.Add(new ModelVersionInfo(v, dir));
        list.Sort((a, b) => a.Version.CompareTo(b.Version));
        return list;
    }

    /// <summary>The version the <c>current</c> pointer names, or <see langword="null"/> (none promoted yet, or it is gone).</summary>
    public ModelVersionInfo? GetCurrent()
    {
        var pointer = Path.Combine(Root, CurrentFileName);
        if (!File.Exists(pointer)) return null;
        var text = File.ReadAllText(pointer).Trim();
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) return null;
        var dir = Path.Combine(Root, FolderName(v));
        return File.Exists(Path.Combine(dir, ModelFileName)) ? new ModelVersionInfo(v, dir) : null;
    }

    /// <summary>Makes a kept version the serving one again (loading it first when hosted); returns it.</summary>
    /// <exception cref="ModelVersionNotFoundException">The version is not kept.</exception>
    public async Task<ModelVersionInfo> RollbackAsync(int version, CancellationToken cancellationToken = default)
    {
        var target = ListVersions().FirstOrDefault(v => v.Version == version)
            ?? throw new ModelVersionNotFoundException(
                $"Model version {version} is not kept in '{Root}' (kept: {string.Join(", ", ListVersions().Select(v => v.Version))}).");
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (Activator is { } activator)
                await activator.ActivateAsync(target, this, cancellationToken).ConfigureAwait(false);
            else
                SetCurrent(target.Version);
            return target;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Writes a new version folder atomically (not yet current) and returns it.</summary>
    internal ModelVersionInfo AddVersion(string modelPath, string? checkpointPath, object metrics, GateDecision decision)
    {
        if (!File.Exists(modelPath))
            throw new OnnxTuneException($"Candidate model '{modelPath}' does not exist.");
        var version = NextVersion();
        var temp = Path.Combine(Root, $"{TempPrefix}{FolderName(version)}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            CopyFileDurable(modelPath, Path.Combine(temp, ModelFileName));
            var ckpt = Directory.CreateDirectory(Path.Combine(temp, CheckpointFolderName));
            if (checkpointPath is not null && Directory.Exists(checkpointPath))
                CopyDirectoryDurable(checkpointPath, ckpt.FullName);
            WriteJsonDurable(Path.Combine(temp, MetricsFileName), metrics);
            WriteJsonDurable(Path.Combine(temp, DecisionFileName), decision);
            var final = Path.Combine(Root, FolderName(version));
            Directory.Move(temp, final);
            return new ModelVersionInfo(version, final);
        }
        catch
        {
            TryDeleteDirectory(temp);
            throw;
        }
    }

    /// <summary>Points <c>current</c> at <paramref name="version"/> (atomic replace).</summary>
    internal void SetCurrent(int version) =>
        AtomicFile.WriteAllText(Path.Combine(Root, CurrentFileName), version.ToString(CultureInfo.InvariantCulture));

    /// <summary>Deletes versions beyond the newest <see cref="KeepVersions"/>, never the current one; returns the deleted numbers.</summary>
    internal IReadOnlyList<int> Prune()
    {
        var current = GetCurrent()?.Version;
        var versions = ListVersions();
        var deleted = new List<int>();
        for (var i = 0; i < versions.Count - KeepVersions; i++)
        {
            if (versions[i].Version == current) continue;
            TryDeleteDirectory(versions[i].Directory);
            deleted.Add(versions[i].Version);
        }
        return deleted;
    }

    /// <summary>Serialises access for promotion and rollback.</summary>
    internal Task LockAsync(CancellationToken ct) => _gate.WaitAsync(ct);

    internal void Unlock() => _gate.Release();

    /// <summary>Releases the promotion lock's resources.</summary>
    public void Dispose() => _gate.Dispose();

    private int NextVersion()
    {
        var max = 0;
        foreach (var dir in Directory.EnumerateDirectories(Root))
            if (TryParseVersion(Path.GetFileName(dir), out var v)) max = Math.Max(max, v);
        return max + 1;
    }

    internal static string FolderName(int version) => "v" + version.ToString("D6", CultureInfo.InvariantCulture);

    private static bool TryParseVersion(string name, out int version)
    {
        version = 0;
        return name.Length == 7 && name[0] == 'v' &&
               int.TryParse(name.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out version) && version > 0;
    }

    private static void CopyFileDurable(string source, string destination)
    {
        using var src = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        using var dst = new FileStream(destination, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        src.CopyTo(dst);
        dst.Flush(flushToDisk: true);
    }

    private static void CopyDirectoryDurable(string source, string destination)
    {
        foreach (var dir in Directory.EnumerateDirectories(source, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(destination, Path.GetRelativePath(source, dir)));
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
            CopyFileDurable(file, Path.Combine(destination, Path.GetRelativePath(source, file)));
    }

    private static void WriteJsonDurable(string path, object value)
    {
        using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        JsonSerializer.Serialize(fs, value, value.GetType(), ArtifactManifest.JsonOptions);
        fs.Flush(flushToDisk: true);
    }

    private static void TryDeleteDirectory(string path)
    {
        try { Directory.Delete(path, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Loads a version, moves the <c>current</c> pointer and swaps it in (the hosting layer's implementation).</summary>
internal interface IVersionActivator
{
    ValueTask ActivateAsync(ModelVersionInfo version, ModelVersionStore store, CancellationToken cancellationToken);
}
