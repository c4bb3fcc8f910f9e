using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Hosting.Personalization;

/// <summary>One stored adapter version.</summary>
internal sealed record AdapterVersionState
{
    public int Version { get; init; }
    public string File { get; init; } = "";
    /// <summary>Fingerprint (SHA-256) of the shared model file it was trained on.</summary>
    public string BaseFingerprint { get; init; } = "";
    public int? BaseModelVersion { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public int TrainingRecords { get; init; }
    public double? HeldOutAccuracy { get; init; }
    public double? GoldenAccuracy { get; init; }
    public long SizeBytes { get; init; }
    /// <summary>Keyed hashes of the users whose records trained it (user deletion drops the adapter).</summary>
    public IReadOnlyList<string> UserHashes { get; init; } = [];
}

/// <summary>Everything stored for one partition key: its versions, the serving one, and its last attempt.</summary>
internal sealed record AdapterKeyState
{
    public string Key { get; init; } = "";
    /// <summary>The serving version (0: none, the shared model serves the key).</summary>
    public int Current { get; init; }
    public int NextVersion { get; init; } = 1;
    public IReadOnlyList<AdapterVersionState> Versions { get; init; } = [];
    /// <summary>Highest sequence of the key's records at its last adapter round (promoted or not).</summary>
    public long AttemptedThroughSequence { get; init; }
    /// <summary>The key's training-record count at its last adapter round.</summary>
    public long AttemptedTrainingRecords { get; init; }
    /// <summary>The shared model the last adapter round trained on.</summary>
    public string? AttemptedBaseFingerprint { get; init; }

    public AdapterVersionState? Serving => Current == 0 ? null : Versions.FirstOrDefault(v => v.Version == Current);
}

/// <summary>
/// Adapter versions per partition key under <c>ModelStorePath/personalization/keys/&lt;sha256(key)&gt;/</c>:
/// <c>v&lt;n&gt;.onnx_adapter</c> files and a <c>state.json</c>, each written atomically (temp, fsync, rename,
/// directory fsync), the adapter file before the state that names it. Thread-safe.
/// </summary>
internal sealed class AdapterRegistry
{
    private const string StateFileName = "state.json";
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };
    private readonly Lock _lock = new();
    private readonly Dictionary<string, AdapterKeyState> _keys = new(StringComparer.Ordinal);
    private readonly string _root;

    public AdapterRegistry(string root, Action<string, Exception>? onDamaged = null)
    {
        _root = root;
        Directory.CreateDirectory(root);
        foreach (var dir in Directory.EnumerateDirectories(root))
        {
            var file = Path.Combine(dir, StateFileName);
            if (!File.Exists(file)) continue;
            try
            {
                var state = JsonSerializer.Deserialize<AdapterKeyState>(File.ReadAllBytes(file), Json)
                    ?? throw new OnnxTuneException($"'{file}' is empty.");
                if (!string.Equals(Path.GetFileName(dir), FolderName(state.Key), StringComparison.Ordinal))
                    throw new OnnxTuneException($"'{file}' names key hash {FolderName(state.Key)}, not its folder's.");
                _keys[state.Key] = state;
            }
            catch (Exception e) when (e is JsonException or IOException or OnnxTuneException or UnauthorizedAccessException)
            {
                // A damaged key folder serves no adapter (the shared model answers for it) and is retrained from its feedback.
                onDamaged?.Invoke(file, e);
            }
        }
    }

    public int Count { get { lock (_lock) return _keys.Count; } }

    public AdapterKeyState? Get(string key)
    {
        lock (_lock) return _keys.GetValueOrDefault(key);
    }

    public IReadOnlyList<AdapterKeyState> All()
    {
        lock (_lock) return [.. _keys.Values.OrderBy(k => k.Key, StringComparer.Ordinal)];
    }

    public string PathOf(string key, AdapterVersionState version) => Path.Combine(_root, FolderName(key), version.File);

    /// <summary>Records an adapter round's attempt (so rejected data is not retried until new records arrive).</summary>
    public AdapterKeyState RecordAttempt(string key, long throughSequence, long trainingRecords, string baseFingerprint)
    {
        lock (_lock)
        {
            var state = (_keys.GetValueOrDefault(key) ?? new AdapterKeyState { Key = key }) with
            {
                AttemptedThroughSequence = throughSequence,
                AttemptedTrainingRecords = trainingRecords,
                AttemptedBaseFingerprint = baseFingerprint,
            };
            Save(state);
            return state;
        }
    }

    /// <summary>Stores <paramref name="adapterFile"/> as the key's next version and makes it serve; prunes beyond <paramref name="keep"/> versions.</summary>
    public (AdapterKeyState State, AdapterVersionState Version) Promote(string key, string adapterFile, AdapterVersionState version, int keep)
    {
        lock (_lock)
        {
            var state = _keys.GetValueOrDefault(key) ?? new AdapterKeyState { Key = key };
            var n = state.NextVersion;
            var stored = version with
            {
                Version = n,
                File = $"v{n}.onnx_adapter",
                SizeBytes = new FileInfo(adapterFile).Length,
            };
            var target = Path.Combine(_root, FolderName(key), stored.File);
            AtomicFile.Write(target, s => { using var src = File.OpenRead(adapterFile); src.CopyTo(s); });
            var versions = state.Versions.Append(stored).OrderBy(v => v.Version).ToList();
            var pruned = versions.Count > keep ? versions.Take(versions.Count - keep).ToList() : [];
            state = state with { Current = n, NextVersion = n + 1, Versions = versions.Skip(pruned.Count).ToList() };
            Save(state);
            foreach (var old in pruned) TryDelete(Path.Combine(_root, FolderName(key), old.File));
            return (state, stored);
        }
    }

    /// <summary>Drops the serving version; the previous one (or none) serves.</summary>
    public AdapterKeyState? Rollback(string key)
    {
        lock (_lock)
        {
            if (_keys.GetValueOrDefault(key) is not { Serving: { } serving } state) return null;
            var rest = state.Versions.Where(v => v.Version != serving.Version).ToList();
            state = state with { Versions = rest, Current = rest.Count == 0 ? 0 : rest.Max(v => v.Version) };
            Save(state);
            TryDelete(Path.Combine(_root, FolderName(key), serving.File));
            return state;
        }
    }

    /// <summary>Deletes every version and the state of the key; false when it had none.</summary>
    public bool Delete(string key)
    {
        lock (_lock)
        {
            if (!_keys.Remove(key)) return false;
            var dir = Path.Combine(_root, FolderName(key));
            if (!Directory.Exists(dir)) return true;
            // Rename first so that a crash mid-delete never leaves a half folder that looks like a key.
            var doomed = Path.Combine(_root, $".deleted-{Guid.NewGuid():N}");
            Directory.Move(dir, doomed);
            DurableDirectory.Sync(_root);
            Directory.Delete(doomed, recursive: true);
            return true;
        }
    }

    private void Save(AdapterKeyState state)
    {
        AtomicFile.WriteAllBytes(Path.Combine(_root, FolderName(state.Key), StateFileName), JsonSerializer.SerializeToUtf8Bytes(state, Json));
        _keys[state.Key] = state;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>The key's folder: a hash, so that any key is a safe file name and keys are not readable from the disk layout.</summary>
    internal static string FolderName(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..32];
}
