using Microsoft.ML.OnnxRuntime;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Personalization;

/// <summary>A leased adapter-ready base session plus one key's loaded adapter; dispose exactly once.</summary>
internal readonly struct AdapterLease(SwappableInferenceSession.Entry baseEntry, LoadedAdapter adapter, int adapterVersion) : IDisposable
{
    public InferenceSession Session => baseEntry.Session;
    public OrtLoraAdapter Adapter => adapter.Adapter;
    public int AdapterVersion => adapterVersion;

    public void Dispose()
    {
        adapter.Release();
        baseEntry.Release();
    }
}

/// <summary>An <see cref="OrtLoraAdapter"/> with a reference count: the cache holds one, each lease one.</summary>
internal sealed class LoadedAdapter(OrtLoraAdapter adapter, string path, long bytes)
{
    private int _refs = 1;
    public OrtLoraAdapter Adapter { get; } = adapter;
    public string Path { get; } = path;
    public long Bytes { get; } = bytes;

    public bool TryAddRef()
    {
        var r = Volatile.Read(ref _refs);
        while (r > 0)
        {
            var seen = Interlocked.CompareExchange(ref _refs, r + 1, r);
            if (seen == r) return true;
            r = seen;
        }
        return false;
    }

    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) == 0) Adapter.Dispose();
    }
}

/// <summary>
/// Serves keyed predictions: one session of the adapter-ready base for the shared model serving now (opened on the
/// first keyed request, replaced when the shared model changes) and the keys' adapters loaded on demand, least
/// recently used ones unloaded beyond <see cref="PersonalizationOptions.MaxLoadedAdapterBytes"/>. A key's adapter is
/// used only when it was trained on the shared model that serves; otherwise the caller falls back to the shared model.
/// </summary>
internal sealed class AdapterServing(FineTunedModel model, AdapterRegistry registry, AdapterBases bases) : IDisposable
{
    private readonly Lock _lock = new();
    private readonly LinkedList<(string Key, LoadedAdapter Adapter)> _lru = new();
    private readonly Dictionary<string, LinkedListNode<(string Key, LoadedAdapter Adapter)>> _loaded = new(StringComparer.Ordinal);
    private SwappableInferenceSession.Entry? _base;
    private string? _baseFingerprint;
    private long _loadedBytes;

    /// <summary>Bytes of adapters loaded now.</summary>
    public long LoadedBytes { get { lock (_lock) return _loadedBytes; } }

    /// <summary>Adapters loaded now.</summary>
    public int LoadedCount { get { lock (_lock) return _loaded.Count; } }

    /// <summary>Leases the key's adapter on the shared model at <paramref name="servingModelPath"/>; false: serve the key with the shared model.</summary>
    public bool TryLease(string key, string servingModelPath, out AdapterLease lease)
    {
        lease = default;
        if (registry.Get(key) is not { Serving: { } version }) return false;
        var fingerprint = bases.Fingerprint(servingModelPath);
        if (!string.Equals(version.BaseFingerprint, fingerprint, StringComparison.Ordinal)) return false;
        var path = registry.PathOf(key, version);
        lock (_lock)
        {
            var baseEntry = BaseEntry(fingerprint);
            if (baseEntry is null || !baseEntry.TryAddRef()) return false;
            LoadedAdapter adapter;
            try
            {
                adapter = Adapter(key, path);
            }
            catch
            {
                baseEntry.Release();
                throw;
            }
            if (!adapter.TryAddRef())
            {
                baseEntry.Release();
                return false;
            }
            lease = new AdapterLease(baseEntry, adapter, version.Version);
            return true;
        }
    }

    /// <summary>Unloads the key's adapter (after a promotion, rollback or deletion); leases in flight finish with it.</summary>
    public void Invalidate(string key)
    {
        lock (_lock)
        {
            if (!_loaded.Remove(key, out var node)) return;
            _lru.Remove(node);
            _loadedBytes -= node.Value.Adapter.Bytes;
            node.Value.Adapter.Release();
        }
    }

    private SwappableInferenceSession.Entry? BaseEntry(string fingerprint)
    {
        if (_base is not null && _baseFingerprint == fingerprint) return _base;
        if (bases.TryGetAdapterBaseModel(fingerprint) is not { } baseModel) return null;
        var next = model.Prepare(null, baseModel, out _);
        var previous = _base;
        (_base, _baseFingerprint) = (next, fingerprint);
        // Adapters of the previous shared model never fit the new one.
        foreach (var (_, a) in _lru) a.Release();
        _lru.Clear();
        _loaded.Clear();
        _loadedBytes = 0;
        previous?.Release();
        return next;
    }

    private LoadedAdapter Adapter(string key, string path)
    {
        if (_loaded.TryGetValue(key, out var node))
        {
            if (node.Value.Adapter.Path == path)
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                return node.Value.Adapter;
            }
            _lru.Remove(node);
            _loaded.Remove(key);
            _loadedBytes -= node.Value.Adapter.Bytes;
            node.Value.Adapter.Release();
        }
        var bytes = new FileInfo(path).Length;
        var loaded = new LoadedAdapter(OrtLoraAdapter.Create(path, null), path, bytes);
        _loaded[key] = _lru.AddFirst((key, loaded));
        _loadedBytes += bytes;
        var budget = model.Options.Personalization.MaxLoadedAdapterBytes;
        while (_loadedBytes > budget && _lru.Last is { } last && !ReferenceEquals(last.Value.Adapter, loaded))
        {
            _lru.RemoveLast();
            _loaded.Remove(last.Value.Key);
            _loadedBytes -= last.Value.Adapter.Bytes;
            last.Value.Adapter.Release();
        }
        return loaded;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var (_, a) in _lru) a.Release();
            _lru.Clear();
            _loaded.Clear();
            _base?.Release();
            _base = null;
        }
    }
}
