using System.Globalization;
using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
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

    /// <summary>Gets the provenance file (feedback range and keyed user hashes the version was trained on).</summary>
    public string ProvenancePath => Path.Combine(Directory, ModelVersionStore.ProvenanceFileName);
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
    /// <summary>Provenance file name inside a version folder.</summary>
    public const string ProvenanceFileName = "provenance.json";
    /// <summary>Marker written into a version folder once the pointer named it (a folder without it, not current, is an orphan).</summary>
    public const string PromotedMarkerFileName = "promoted";
    /// <summary>Marker of a retired version (its content is the reason); a retired version is never served or rolled back to.</summary>
    public const string RetiredMarkerFileName = "retired";

    private const string TempPrefix = ".tmp-";
    private const string TrashPrefix = ".trash-";
    private const string MarkersFormatFileName = ".promotion-markers";
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly HashSet<int> _added = [];
    private readonly List<int> _orphans = [];
    private readonly ISharedVersionRegistry? _shared;

    /// <summary>Opens (creating if needed) a store under <paramref name="root"/> and removes leftovers of interrupted writes.</summary>
    public ModelVersionStore(string root, int keepVersions) : this(root, keepVersions, null) { }

    /// <summary>Opens the local replica of a shared registry: after the local clean-up it imports the shared state and points at the shared serving version.</summary>
    internal ModelVersionStore(string root, int keepVersions, ISharedVersionRegistry? shared)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        ArgumentOutOfRangeException.ThrowIfLessThan(keepVersions, 1);
        Root = Path.GetFullPath(root);
        KeepVersions = keepVersions;
        Directory.CreateDirectory(Root);
        foreach (var leftover in Directory.EnumerateDirectories(Root, TempPrefix + "*"))
            TryDeleteDirectory(leftover);
        foreach (var leftover in Directory.EnumerateDirectories(Root, TrashPrefix + "*"))
            TryDeleteDirectory(leftover);
        // A pointer write interrupted before its rename leaves AtomicFile's temp file.
        foreach (var leftover in Directory.EnumerateFiles(Root, $".{CurrentFileName}.*.tmp"))
        {
            try { File.Delete(leftover); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        RemoveOrphans();
        _shared = shared;
        if (shared?.Synchronize(this) is { } serving && serving != ReadPointer()) SetCurrentLocal(serving);
    }

    /// <summary>Marker holding the shared registry's id of a version folder (replicas only).</summary>
    internal const string SharedIdFileName = "shared-id";

    /// <summary>True when this store is the replica of a shared registry.</summary>
    internal bool IsShared => _shared is not null;

    /// <summary>Gets the version folders found at open that were never promoted (a crash between writing the folder and moving the pointer); they were removed.</summary>
    public IReadOnlyList<int> RemovedOrphans => _orphans;

    /// <summary>Gets the store folder.</summary>
    public string Root { get; }

    /// <summary>Gets how many versions are kept.</summary>
    public int KeepVersions { get; }

    /// <summary>Called by rollback to load the target before the pointer moves; set by the hosting layer.</summary>
    internal IVersionActivator? Activator { get; set; }

    /// <summary>Lists complete, promoted, not retired versions, oldest first (temp, orphan and incomplete folders are ignored).</summary>
    public IReadOnlyList<ModelVersionInfo> ListVersions()
    {
        var current = ReadPointer();
        var list = new List<ModelVersionInfo>();
        foreach (var info in ListFolders())
        {
            if (IsRetired(info)) continue;
            bool added;
            lock (_added) added = _added.Contains(info.Version);
            if (added || info.Version == current || File.Exists(Path.Combine(info.Directory, PromotedMarkerFileName)))
                list.Add(info);
        }
        return list;
    }

    /// <summary>Lists retired versions still on disk, oldest first.</summary>
    public IReadOnlyList<ModelVersionInfo> ListRetiredVersions() => ListFolders().Where(IsRetired).ToArray();

    /// <summary>Reads a version's provenance (null for versions written before provenance existed).</summary>
    /// <exception cref="OnnxTuneException">The provenance file is malformed.</exception>
    public static VersionProvenance? ReadProvenance(ModelVersionInfo version)
    {
        ArgumentNullException.ThrowIfNull(version);
        if (!File.Exists(version.ProvenancePath)) return null;
        try
        {
            return JsonSerializer.Deserialize<VersionProvenance>(File.ReadAllText(version.ProvenancePath), ArtifactManifest.JsonOptions)
                ?? throw new OnnxTuneException($"Provenance file '{version.ProvenancePath}' is empty.");
        }
        catch (JsonException e)
        {
            throw new OnnxTuneException($"Provenance file '{version.ProvenancePath}' is malformed: {e.Message}", e);
        }
    }

    /// <summary>
    /// Retires a version: it is never served or rolled back to again. When it is serving, the newest other kept
    /// version (or the base model when none is left) is activated first. Returns the version serving afterwards
    /// (null: the base model).
    /// </summary>
    /// <exception cref="ModelVersionNotFoundException">No such version folder.</exception>
    public async Task<ModelVersionInfo?> RetireAsync(int version, string reason, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(reason);
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var target = ListFolders().FirstOrDefault(v => v.Version == version)
                ?? throw new ModelVersionNotFoundException($"Model version {version} is not in '{Root}'.");
            var serving = ReadPointer();
            _shared?.Retire(version, reason);
            WriteMarker(target, RetiredMarkerFileName, reason);
            if (serving != version) return GetCurrent();
            var fallback = ListVersions().LastOrDefault(v => v.Version != version);
            if (Activator is { } activator)
            {
                if (fallback is null) await activator.ActivateBaseAsync(this, cancellationToken).ConfigureAwait(false);
                else await activator.ActivateAsync(fallback, this, cancellationToken).ConfigureAwait(false);
            }
            else SetCurrent(fallback?.Version ?? 0);
            return fallback;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>The version the <c>current</c> pointer names, or <see langword="null"/> (none promoted yet, or it is gone).</summary>
    public ModelVersionInfo? GetCurrent()
    {
        if (ReadPointer() is not { } v || v <= 0) return null;
        var dir = Path.Combine(Root, FolderName(v));
        var info = new ModelVersionInfo(v, dir);
        return File.Exists(Path.Combine(dir, ModelFileName)) && !IsRetired(info) ? info : null;
    }

    /// <summary>The number the pointer holds (0: the base model on purpose), or null when there is no readable pointer.</summary>
    internal int? ReadPointer()
    {
        var pointer = Path.Combine(Root, CurrentFileName);
        try
        {
            if (!File.Exists(pointer)) return null;
            var text = File.ReadAllText(pointer).Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Makes a kept version the serving one again (loading it first when hosted); returns it.</summary>
    /// <exception cref="ModelVersionNotFoundException">The version is not kept.</exception>
    public async Task<ModelVersionInfo> RollbackAsync(int version, CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var target = ListVersions().FirstOrDefault(v => v.Version == version)
                ?? throw new ModelVersionNotFoundException(
                    $"Model version {version} is not kept in '{Root}' (kept: {string.Join(", ", ListVersions().Select(v => v.Version))}" +
                    $"{(ListRetiredVersions().Any(v => v.Version == version) ? $"; version {version} is retired" : "")}).");
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
    internal ModelVersionInfo AddVersion(string modelPath, string? checkpointPath, object metrics, GateDecision decision, VersionProvenance? provenance = null)
    {
        if (!File.Exists(modelPath))
            throw new OnnxTuneException($"Candidate model '{modelPath}' does not exist.");
        var version = _shared?.NextVersion(NextVersion()) ?? NextVersion();
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
            if (provenance is not null) WriteJsonDurable(Path.Combine(temp, ProvenanceFileName), provenance);
            // The entries inside the folder must be durable before the rename publishes it.
            foreach (var dir in Directory.EnumerateDirectories(temp, "*", SearchOption.AllDirectories)) DurableDirectory.Sync(dir);
            DurableDirectory.Sync(temp);
            var final = Path.Combine(Root, FolderName(version));
            DurableDirectory.Move(temp, final);
            lock (_added) _added.Add(version);
            var info = new ModelVersionInfo(version, final);
            if (_shared is { } shared)
            {
                try
                {
                    WriteMarker(info, SharedIdFileName, shared.Publish(info));
                }
                catch
                {
                    Discard(info);
                    throw;
                }
            }
            CrashPoints.Hit(CrashPoints.AfterVersionFolder);
            return info;
        }
        catch
        {
            TryDeleteDirectory(temp);
            throw;
        }
    }

    /// <summary>
    /// Imports a version of the shared registry into this replica: <paramref name="fill"/> writes its files into a
    /// temp folder, which gets the promoted marker and <paramref name="sharedId"/>, is flushed and renamed into place
    /// (replacing a local folder of the same number with other content).
    /// </summary>
    internal ModelVersionInfo ImportVersion(int version, string sharedId, Action<string> fill)
    {
        var temp = Path.Combine(Root, $"{TempPrefix}{FolderName(version)}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            fill(temp);
            if (!File.Exists(Path.Combine(temp, ModelFileName)))
                throw new OnnxTuneException($"Shared version {version} has no {ModelFileName}.");
            var staged = new ModelVersionInfo(version, temp);
            WriteMarker(staged, PromotedMarkerFileName, "");
            WriteMarker(staged, SharedIdFileName, sharedId);
            foreach (var dir in Directory.EnumerateDirectories(temp, "*", SearchOption.AllDirectories)) DurableDirectory.Sync(dir);
            DurableDirectory.Sync(temp);
            var final = Path.Combine(Root, FolderName(version));
            if (Directory.Exists(final))
            {
                var trash = Path.Combine(Root, $"{TrashPrefix}{FolderName(version)}-{Guid.NewGuid():N}");
                DurableDirectory.Move(final, trash);
                TryDeleteDirectory(trash);
            }
            DurableDirectory.Move(temp, final);
            return new ModelVersionInfo(version, final);
        }
        catch
        {
            TryDeleteDirectory(temp);
            throw;
        }
    }

    /// <summary>The shared id of a local version folder, or null (not imported or published, or absent).</summary>
    internal string? ReadSharedId(int version)
    {
        var path = Path.Combine(Root, FolderName(version), SharedIdFileName);
        try { return File.Exists(path) ? File.ReadAllText(path).Trim() : null; }
        catch (IOException) { return null; }
    }

    /// <summary>True when the local folder of <paramref name="version"/> exists and carries the retired marker.</summary>
    internal bool IsRetiredLocally(int version) => IsRetired(new ModelVersionInfo(version, Path.Combine(Root, FolderName(version))));

    /// <summary>Writes the retired marker of a version retired elsewhere in the fleet (no-op when its folder is absent).</summary>
    internal void MarkRetiredLocal(int version, string reason)
    {
        var info = new ModelVersionInfo(version, Path.Combine(Root, FolderName(version)));
        if (Directory.Exists(info.Directory) && !IsRetired(info)) WriteMarker(info, RetiredMarkerFileName, reason);
    }

    /// <summary>
    /// Points <c>current</c> at <paramref name="version"/> (atomic replace, directory flushed; 0 names the base model),
    /// then marks the version promoted. A crash between the two leaves a current version without its marker, which
    /// <see cref="MarkCurrentPromoted"/> repairs at the next start.
    /// </summary>
    internal void SetCurrent(int version)
    {
        if (_shared is { } shared)
        {
            bool promotion;
            lock (_added) promotion = _added.Contains(version);
            shared.SetCurrent(version, ReadPointer(), promotion && !File.Exists(Path.Combine(Root, FolderName(version), PromotedMarkerFileName)));
        }
        SetCurrentLocal(version);
    }

    /// <summary>Moves only the local pointer (a replica following the shared pointer).</summary>
    internal void SetCurrentLocal(int version)
    {
        AtomicFile.WriteAllText(Path.Combine(Root, CurrentFileName), version.ToString(CultureInfo.InvariantCulture));
        CrashPoints.Hit(CrashPoints.AfterPointer);
        if (version > 0) WriteMarker(new ModelVersionInfo(version, Path.Combine(Root, FolderName(version))), PromotedMarkerFileName, "");
    }

    /// <summary>Writes the promoted marker of the current version when a crash left it out.</summary>
    internal void MarkCurrentPromoted()
    {
        if (GetCurrent() is { } current && !File.Exists(Path.Combine(current.Directory, PromotedMarkerFileName)))
            WriteMarker(current, PromotedMarkerFileName, "");
    }

    /// <summary>
    /// Removes versions beyond the newest <see cref="KeepVersions"/>, never the current one: each is first renamed
    /// out of the listing (durably), then deleted. Returns the removed numbers and the errors met.
    /// </summary>
    internal PruneResult Prune()
    {
        var current = ReadPointer();
        var versions = ListVersions();
        var deleted = new List<int>();
        var errors = new List<string>();
        for (var i = 0; i < versions.Count - KeepVersions; i++)
        {
            if (versions[i].Version == current) continue;
            var trash = Path.Combine(Root, $"{TrashPrefix}{FolderName(versions[i].Version)}-{Guid.NewGuid():N}");
            try
            {
                DurableDirectory.Move(versions[i].Directory, trash);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                errors.Add($"version {versions[i].Version}: {e.Message}");
                continue;
            }
            lock (_added) _added.Remove(versions[i].Version);
            deleted.Add(versions[i].Version);
            try { _shared?.Pruned(versions[i].Version); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                errors.Add($"version {versions[i].Version} (shared registry): {e.Message}");
            }
            CrashPoints.Hit(CrashPoints.DuringPrune);
            try { Directory.Delete(trash, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                errors.Add($"version {versions[i].Version} (renamed to '{trash}', removed at the next start): {e.Message}");
            }
        }
        return new PruneResult(deleted, errors);
    }

    /// <summary>Removes a version folder that was written but never became current (its activation failed).</summary>
    internal void Discard(ModelVersionInfo version)
    {
        lock (_added) _added.Remove(version.Version);
        try { _shared?.Discard(version.Version); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The registry forgets unpromoted versions at the next takeover.
        }
        var trash = Path.Combine(Root, $"{TrashPrefix}{FolderName(version.Version)}-{Guid.NewGuid():N}");
        try
        {
            DurableDirectory.Move(version.Directory, trash);
            Directory.Delete(trash, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // It stays an orphan folder (no promoted marker) and is removed at the next start.
        }
    }

    /// <summary>Serialises access for promotion and rollback.</summary>
    internal Task LockAsync(CancellationToken ct) => _gate.WaitAsync(ct);

    internal void Unlock() => _gate.Release();

    /// <summary>Releases the promotion lock's resources.</summary>
    public void Dispose() => _gate.Dispose();

    private IEnumerable<ModelVersionInfo> ListFolders()
    {
        var list = new List<ModelVersionInfo>();
        foreach (var dir in Directory.EnumerateDirectories(Root))
            if (TryParseVersion(Path.GetFileName(dir), out var v) && File.Exists(Path.Combine(dir, ModelFileName)))
                list.Add(new ModelVersionInfo(v, dir));
        list.Sort((a, b) => a.Version.CompareTo(b.Version));
        return list;
    }

    private static bool IsRetired(ModelVersionInfo info) => File.Exists(Path.Combine(info.Directory, RetiredMarkerFileName));

    private void RemoveOrphans()
    {
        var format = Path.Combine(Root, MarkersFormatFileName);
        if (!File.Exists(format))
        {
            // A store written before promoted markers existed listed every complete folder as promoted: keep that.
            foreach (var info in ListFolders()) WriteMarker(info, PromotedMarkerFileName, "");
            AtomicFile.WriteAllText(format, "1");
            return;
        }
        MarkCurrentPromoted();
        var current = ReadPointer();
        foreach (var info in ListFolders())
        {
            if (info.Version == current || File.Exists(Path.Combine(info.Directory, PromotedMarkerFileName))) continue;
            _orphans.Add(info.Version);
            Discard(info);
        }
    }

    private static void WriteMarker(ModelVersionInfo version, string name, string content)
    {
        var path = Path.Combine(version.Directory, name);
        using (var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            fs.Write(System.Text.Encoding.UTF8.GetBytes(content));
            fs.Flush(flushToDisk: true);
        }
        DurableDirectory.Sync(version.Directory);
    }

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

    /// <summary>Serves the artifacts' base model and points <c>current</c> at 0 (every version retired).</summary>
    ValueTask ActivateBaseAsync(ModelVersionStore store, CancellationToken cancellationToken);
}

/// <summary>What pruning removed and the errors it met (a version that could not be renamed stays listed).</summary>
internal sealed record PruneResult(IReadOnlyList<int> Deleted, IReadOnlyList<string> Errors);

/// <summary>What a promoted version was trained on (<c>provenance.json</c> in its folder).</summary>
public sealed record VersionProvenance
{
    /// <summary>Gets the round that trained the version.</summary>
    public long Round { get; init; }

    /// <summary>Gets the version the candidate was trained from and gated against (null: the base model).</summary>
    public int? GatedAgainstVersion { get; init; }

    /// <summary>Gets the lowest feedback sequence number trained on (new or replayed), or 0 when none.</summary>
    public long FirstSequence { get; init; }

    /// <summary>Gets the highest feedback sequence number the round covered: the training watermark once promoted.</summary>
    public long UpToSequence { get; init; }

    /// <summary>Gets how many records were trained on.</summary>
    public int RecordCount { get; init; }

    /// <summary>Gets the keyed hashes (HMAC-SHA256 with the feedback store's secret) of the users whose records trained the version.</summary>
    public IReadOnlyList<string> UserHashes { get; init; } = [];

    /// <summary>Gets the number of trained records without a user id.</summary>
    public int AnonymousRecordCount { get; init; }
}
