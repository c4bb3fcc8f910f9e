using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Training.Caching;

/// <summary>Settings of an <see cref="ActivationCache"/>.</summary>
public sealed record ActivationCacheOptions
{
    /// <summary>Examples per prefix run (examples of equal input shapes only).</summary>
    /// <value>The default value is 32.</value>
    public int BatchSize { get; init; } = 32;

    /// <summary>Safetensors file that keeps the activations between rounds (null: memory only).</summary>
    public string? FilePath { get; init; }

    /// <summary>Intra-op threads of the prefix session (0: ONNX Runtime's default).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>
    /// Keep the prefix session open after <see cref="ActivationCache.Build"/>. By default it is released when a build
    /// ends, so its weights and activation arena do not sit beside the training session; a later build that meets new
    /// examples opens it again. Keep it when many small builds follow one another.
    /// </summary>
    /// <value>The default value is false.</value>
    public bool KeepPrefixSession { get; init; }
}

/// <summary>What <see cref="ActivationCache.Build"/> did.</summary>
/// <param name="Computed">Examples run through the prefix.</param>
/// <param name="Reused">Examples already cached (in memory or loaded from the file).</param>
/// <param name="PrefixRuns">Batched prefix runs.</param>
/// <param name="Elapsed">Wall time of the build.</param>
public sealed record CacheBuildResult(int Computed, int Reused, int PrefixRuns, TimeSpan Elapsed);

/// <summary>
/// Runs a frozen prefix (<see cref="FrozenPrefixSplitter"/>) once per example and keeps each example's frontier
/// tensors, so the trainable suffix can train for many epochs and rounds without recomputing the frozen part.
/// </summary>
/// <remarks>
/// <para>Variable lengths are cached per length bucket: each example is stored exactly as the prefix computed it at
/// the padded length its inputs had, and only examples of equal shapes share a batch. Re-padding unpadded
/// activations is not done because the right pad value of a frontier tensor is unknown in general (an additive
/// attention mask pads with a large negative number, hidden states at padded positions are not zero).</para>
/// <para>Entries are keyed by example id and a hash of the example's inputs; the file records the SHA-256 of the
/// prefix model, and a file written for another prefix (other weights, other split) is ignored and replaced.
/// The prefix must treat examples independently (no batch statistics), which holds for inference graphs.</para>
/// </remarks>
public sealed class ActivationCache : IDisposable
{
    private const string FormatKey = "onnxtune_activation_cache";
    private const string PrefixKey = "prefix_sha256";
    private const string IdsKey = "ids";
    private const string HashesKey = "input_sha256";
    private const string NamesKey = "tensors";

    private readonly byte[] _prefixBytes;
    private InferenceSession? _prefix;
    private SessionOptions? _sessionOptions;
    private readonly RunOptions _runOptions = new();
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly string[] _frontier;
    private readonly string[] _passthrough;
    private bool _dirty;
    private bool _disposed;

    private sealed record Entry(string InputHash, SafeTensor[] Tensors);

    /// <summary>Opens a cache for a split; loads <see cref="ActivationCacheOptions.FilePath"/> when it exists and matches the prefix.</summary>
    /// <exception cref="ActivationCacheException">The prefix model does not match the manifest.</exception>
    public ActivationCache(ModelProto prefix, PrefixSplitManifest manifest, ActivationCacheOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        ArgumentNullException.ThrowIfNull(manifest);
        Options = options ?? new ActivationCacheOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.BatchSize, 1);
        Manifest = manifest;
        var bytes = OnnxModelWriter.ToBytes(prefix);
        PrefixSha256 = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes));
        _frontier = manifest.Frontier.Select(f => f.Name).ToArray();
        _passthrough = manifest.PassthroughInputs.Select(f => f.Name).ToArray();
        var outputs = prefix.Graph.Output.Select(o => o.Name).ToArray();
        if (!outputs.SequenceEqual(_frontier))
            throw new ActivationCacheException($"The prefix model outputs [{string.Join(", ", outputs)}] but the split lists the frontier [{string.Join(", ", _frontier)}]; use the prefix and manifest of the same split.");
        _prefixBytes = bytes;
        if (Options.FilePath is { } path && File.Exists(path)) LoadFile(path);
    }

    /// <summary>Opens a cache over a split in memory.</summary>
    public ActivationCache(PrefixSplit split, ActivationCacheOptions? options = null)
        : this((split ?? throw new ArgumentNullException(nameof(split))).Prefix, split.Manifest, options) { }

    /// <summary>Opens a cache over a split saved with <see cref="PrefixSplit.Save"/>.</summary>
    /// <exception cref="ActivationCacheException">The prefix model is not the one the split's manifest describes.</exception>
    public static ActivationCache Open(string splitDirectory, ActivationCacheOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(splitDirectory);
        var manifest = PrefixSplitManifest.Load(splitDirectory);
        var path = Path.Combine(splitDirectory, PrefixSplit.PrefixFileName);
        var cache = new ActivationCache(OnnxModelReader.Load(path), manifest, options);
        if (cache.PrefixSha256 != manifest.PrefixSha256)
        {
            cache.Dispose();
            throw new ActivationCacheException($"{path} (SHA-256 {cache.PrefixSha256}) is not the prefix described by {PrefixSplitManifest.FileName} ({manifest.PrefixSha256}); split the model again.");
        }
        return cache;
    }

    /// <summary>The settings.</summary>
    public ActivationCacheOptions Options { get; }

    /// <summary>The split this cache serves.</summary>
    public PrefixSplitManifest Manifest { get; }

    /// <summary>SHA-256 of the prefix model bytes (the cache key besides the example id).</summary>
    public string PrefixSha256 { get; }

    /// <summary>Cached examples.</summary>
    public int Count => _entries.Count;

    /// <summary>Examples loaded from the file when the cache was opened.</summary>
    public int LoadedFromFile { get; private set; }

    /// <summary>True when a file existed but was written for another prefix model (and was ignored).</summary>
    public bool FileWasStale { get; private set; }

    /// <summary>Bytes of cached tensors.</summary>
    public long Bytes => _entries.Values.Sum(e => e.Tensors.Sum(t => (long)t.Data.Length));

    /// <summary>Names of the tensors kept per example: the frontier, then the passthrough data inputs (the suffix's inputs).</summary>
    public IReadOnlyList<string> TensorNames => [.. _frontier, .. _passthrough];

    /// <summary>True when the example is cached with the same inputs.</summary>
    public bool Contains(TrainingExample example)
    {
        ArgumentNullException.ThrowIfNull(example);
        return _entries.TryGetValue(example.Id, out var e) && e.InputHash == example.InputHash();
    }

    /// <summary>
    /// Runs the prefix for every example not yet cached (or whose inputs changed), batching examples of equal input
    /// shapes, and writes the file when one is configured and anything changed.
    /// </summary>
    /// <exception cref="ActivationCacheException">Duplicate ids, missing inputs, or a prefix output without the batch on dim 0.</exception>
    public CacheBuildResult Build(IEnumerable<TrainingExample> examples)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(examples);
        var watch = Stopwatch.StartNew();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<(TrainingExample Example, string Hash)>();
        var reused = 0;
        foreach (var e in examples)
        {
            if (!ids.Add(e.Id))
                throw new ActivationCacheException($"Example id '{e.Id}' appears twice; ids key the cache and must be unique.");
            var hash = e.InputHash();
            if (_entries.TryGetValue(e.Id, out var entry) && entry.InputHash == hash) reused++;
            else missing.Add((e, hash));
        }
        var runs = 0;
        foreach (var group in missing.GroupBy(m => m.Example.ShapeKey(), StringComparer.Ordinal))
            foreach (var chunk in group.Chunk(Options.BatchSize))
            {
                RunPrefix(chunk);
                runs++;
            }
        if (missing.Count > 0) _dirty = true;
        if (!Options.KeepPrefixSession) ReleasePrefixSession();
        if (_dirty && Options.FilePath is { } path) Save(path);
        return new CacheBuildResult(missing.Count, reused, runs, watch.Elapsed);
    }

    /// <summary>The cached suffix inputs of one example (frontier tensors, then passthrough inputs).</summary>
    /// <exception cref="ActivationCacheException">The example is not cached.</exception>
    public IReadOnlyList<SafeTensor> Get(string id) =>
        _entries.TryGetValue(id, out var e) ? e.Tensors
        : throw new ActivationCacheException($"Example '{id}' is not in the activation cache; call Build with it first.");

    /// <summary>A suffix batch for the examples: their cached tensors stacked on dim 0, plus their labels when they have them.</summary>
    /// <exception cref="ActivationCacheException">An example is not cached, or the examples' cached shapes differ.</exception>
    public TrainingBatch CreateBatch(IReadOnlyList<TrainingExample> examples) => CreateBatch(examples, buffers: null);

    /// <summary>As <see cref="CreateBatch(IReadOnlyList{TrainingExample})"/>, stacked into reused buffers (valid until the next batch).</summary>
    internal TrainingBatch CreateBatch(IReadOnlyList<TrainingExample> examples, BatchStackBuffers? buffers)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(examples);
        if (examples.Count == 0) throw new ArgumentException("A batch needs at least one example.", nameof(examples));
        var cached = examples.Select(e => new TrainingExample(e.Id, Get(e.Id), e.Label)).ToList();
        return ExampleBatches.Stack(cached, buffers);
    }

    /// <summary>
    /// Forgets every cached example whose id is not in <paramref name="ids"/>, so a cache kept across rounds holds
    /// only what is still trained on (the file is rewritten at the next <see cref="Build"/> or <see cref="Save"/>).
    /// Returns how many were dropped.
    /// </summary>
    public int RetainOnly(IEnumerable<string> ids)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(ids);
        var keep = ids.ToHashSet(StringComparer.Ordinal);
        var drop = _entries.Keys.Where(k => !keep.Contains(k)).ToList();
        foreach (var id in drop) _entries.Remove(id);
        if (drop.Count > 0) _dirty = true;
        return drop.Count;
    }

    /// <summary>Forgets every cached example (the file is left alone until the next <see cref="Build"/> or <see cref="Save"/>).</summary>
    public void Clear()
    {
        _entries.Clear();
        _dirty = true;
    }

    /// <summary>Writes every cached example to a safetensors file atomically, with the prefix hash in its metadata.</summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var tensors = new List<SafeTensor>();
        var ids = new List<string>();
        var hashes = new List<string>();
        var names = TensorNames;
        foreach (var (id, entry) in _entries.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            var k = ids.Count;
            ids.Add(id);
            hashes.Add(entry.InputHash);
            for (var t = 0; t < entry.Tensors.Length; t++)
                tensors.Add(new SafeTensor($"{k}.{t}", entry.Tensors[t].DType, entry.Tensors[t].Shape, entry.Tensors[t].Data));
        }
        var metadata = new Dictionary<string, string>
        {
            [FormatKey] = "1",
            [PrefixKey] = PrefixSha256,
            [IdsKey] = JsonSerializer.Serialize(ids),
            [HashesKey] = JsonSerializer.Serialize(hashes),
            [NamesKey] = JsonSerializer.Serialize(names),
        };
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        new SafeTensorsFile(tensors, metadata).Write(path);
        _dirty = false;
    }

    /// <summary>Releases the prefix session (when one was created).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        ReleasePrefixSession();
        _runOptions.Dispose();
    }

    /// <summary>True while the prefix session is open (between the first prefix run of a build and its end, or longer with <see cref="ActivationCacheOptions.KeepPrefixSession"/>).</summary>
    internal bool PrefixSessionOpen => _prefix is not null;

    private void ReleasePrefixSession()
    {
        _prefix?.Dispose();
        _prefix = null;
        _sessionOptions?.Dispose();
        _sessionOptions = null;
    }

    private void LoadFile(string path)
    {
        var file = SafeTensorsFile.Read(path);
        if (!file.Metadata.TryGetValue(FormatKey, out var format) || format != "1")
            throw new ActivationCacheException($"'{path}' is a safetensors file but not an OnnxTune activation cache (no {FormatKey} = 1 in its metadata).");
        var names = JsonSerializer.Deserialize<string[]>(file.Metadata.GetValueOrDefault(NamesKey, "[]")) ?? [];
        if (file.Metadata.GetValueOrDefault(PrefixKey) != PrefixSha256 || !names.SequenceEqual(TensorNames))
        {
            FileWasStale = true;
            _dirty = true;
            return;
        }
        var ids = JsonSerializer.Deserialize<string[]>(file.Metadata.GetValueOrDefault(IdsKey, "[]")) ?? [];
        var hashes = JsonSerializer.Deserialize<string[]>(file.Metadata.GetValueOrDefault(HashesKey, "[]")) ?? [];
        if (hashes.Length != ids.Length)
            throw new ActivationCacheException($"Activation cache '{path}' lists {ids.Length} ids but {hashes.Length} input hashes.");
        for (var k = 0; k < ids.Length; k++)
        {
            var tensors = new SafeTensor[names.Length];
            for (var t = 0; t < names.Length; t++)
            {
                var stored = file.Find($"{k}.{t}")
                    ?? throw new ActivationCacheException($"Activation cache '{path}' lacks tensor '{names[t]}' of example '{ids[k]}' (entry {k}.{t}).");
                tensors[t] = new SafeTensor(names[t], stored.DType, stored.Shape, stored.Data);
            }
            _entries[ids[k]] = new Entry(hashes[k], tensors);
        }
        LoadedFromFile = ids.Length;
    }

    // The prefix session is created on first use: a later round whose examples are all cached never loads it.
    private InferenceSession PrefixSession()
    {
        if (_prefix is not null) return _prefix;
        _sessionOptions = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        if (Options.IntraOpThreads > 0) _sessionOptions.IntraOpNumThreads = Options.IntraOpThreads;
        _prefix = new InferenceSession(_prefixBytes, _sessionOptions);
        return _prefix;
    }

    private void RunPrefix(IReadOnlyList<(TrainingExample Example, string Hash)> chunk)
    {
        var n = chunk.Count;
        var prefix = PrefixSession();
        var inputNames = prefix.InputNames;
        var values = new List<OrtValue>(inputNames.Count);
        try
        {
            foreach (var name in inputNames)
            {
                var rows = chunk.Select(c => (c.Example.Id, Find(c.Example, name))).ToList();
                var first = rows[0].Item2;
                var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, ToOrt(first.DType, name), [n, .. first.Shape]);
                values.Add(value);
                var target = value.GetTensorMutableRawData();
                for (var i = 0; i < n; i++) rows[i].Item2.Data.CopyTo(target[(i * first.Data.Length)..]);
            }
            using var outputs = prefix.Run(_runOptions, inputNames, values, _frontier);
            var perExample = new SafeTensor[n][];
            for (var i = 0; i < n; i++) perExample[i] = new SafeTensor[_frontier.Length + _passthrough.Length];
            for (var o = 0; o < _frontier.Length; o++)
            {
                var info = outputs[o].GetTensorTypeAndShape();
                var shape = info.Shape;
                if (shape.Length == 0 || shape[0] != n)
                    throw new ActivationCacheException($"Prefix output '{_frontier[o]}' has shape [{string.Join(",", shape)}] for a batch of {n}; frontier tensors must have the batch on dim 0.");
                var dtype = ToSafe(info.ElementDataType, _frontier[o]);
                var raw = outputs[o].GetTensorMutableRawData();
                var rowBytes = raw.Length / n;
                for (var i = 0; i < n; i++)
                    perExample[i][o] = new SafeTensor(_frontier[o], dtype, shape[1..], raw.Slice(i * rowBytes, rowBytes).ToArray());
            }
            for (var i = 0; i < n; i++)
            {
                for (var p = 0; p < _passthrough.Length; p++)
                    perExample[i][_frontier.Length + p] = Find(chunk[i].Example, _passthrough[p]);
                _entries[chunk[i].Example.Id] = new Entry(chunk[i].Hash, perExample[i]);
            }
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static SafeTensor Find(TrainingExample e, string name) =>
        e.Inputs.FirstOrDefault(t => t.Name == name)
        ?? throw new ActivationCacheException($"Example '{e.Id}' has no input '{name}', which the prefix model reads (it has {string.Join(", ", e.Inputs.Select(t => t.Name))}).");

    private static TensorElementType ToOrt(SafeTensorDType t, string name) => t switch
    {
        SafeTensorDType.F32 => TensorElementType.Float,
        SafeTensorDType.F64 => TensorElementType.Double,
        SafeTensorDType.I64 => TensorElementType.Int64,
        SafeTensorDType.I32 => TensorElementType.Int32,
        SafeTensorDType.Bool => TensorElementType.Bool,
        _ => throw new ActivationCacheException($"Input '{name}' has unsupported element type {t}."),
    };

    private static SafeTensorDType ToSafe(TensorElementType t, string name) => t switch
    {
        TensorElementType.Float => SafeTensorDType.F32,
        TensorElementType.Double => SafeTensorDType.F64,
        TensorElementType.Int64 => SafeTensorDType.I64,
        TensorElementType.Int32 => SafeTensorDType.I32,
        TensorElementType.Bool => SafeTensorDType.Bool,
        _ => throw new ActivationCacheException($"Prefix output '{name}' has element type {t}; the activation cache stores float32, float64, int64, int32 and bool tensors."),
    };
}

/// <summary>The activation cache cannot serve a request (the message names the example, tensor or file).</summary>
public sealed class ActivationCacheException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public ActivationCacheException(string message, Exception? inner = null) : base(message, inner) { }
}
