using System.Buffers.Binary;
using System.Text.Json;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Training.SafeTensors;

/// <summary>
/// Reads and writes the safetensors format: an 8-byte little-endian header length, a JSON header mapping each
/// tensor name to <c>dtype</c>, <c>shape</c> and <c>data_offsets</c> (relative to the data section) plus an optional
/// <c>__metadata__</c> string map, then the tensor bytes.
/// </summary>
public sealed class SafeTensorsFile
{
    private const string MetadataKey = "__metadata__";
    private const long MaxHeaderBytes = 100L << 20;
    private readonly Dictionary<string, SafeTensor> _byName;

    /// <summary>Creates a file model from tensors (names must be unique) and string metadata.</summary>
    public SafeTensorsFile(IEnumerable<SafeTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        Tensors = tensors.ToList();
        _byName = new Dictionary<string, SafeTensor>(StringComparer.Ordinal);
        foreach (var t in Tensors)
            if (!_byName.TryAdd(t.Name, t))
                throw new ArgumentException($"Tensor '{t.Name}' is listed twice.", nameof(tensors));
        Metadata = metadata ?? new Dictionary<string, string>();
    }

    /// <summary>The tensors, in file (data offset) order when read.</summary>
    public IReadOnlyList<SafeTensor> Tensors { get; }

    /// <summary>The <c>__metadata__</c> map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensor named <paramref name="name"/>, or null.</summary>
    public SafeTensor? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>The tensor named <paramref name="name"/>.</summary>
    /// <exception cref="SafeTensorsFormatException">No such tensor.</exception>
    public SafeTensor Get(string name) => Find(name)
        ?? throw new SafeTensorsFormatException($"The safetensors file has no tensor named '{name}' (it has {Tensors.Count}: {string.Join(", ", Tensors.Take(8).Select(t => t.Name))}{(Tensors.Count > 8 ? ", ..." : "")}).");

    /// <summary>Reads a file.</summary>
    /// <exception cref="SafeTensorsFormatException">The file is missing, truncated or malformed.</exception>
    public static SafeTensorsFile Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
            throw new SafeTensorsFormatException($"Safetensors file '{path}' does not exist.");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException)
        {
            throw new SafeTensorsFormatException($"Cannot read safetensors file '{path}': {e.Message}", e);
        }
        return Parse(bytes, path);
    }

    /// <summary>Parses file bytes; <paramref name="sourceName"/> appears in error messages.</summary>
    /// <exception cref="SafeTensorsFormatException">The bytes are truncated or malformed.</exception>
    public static SafeTensorsFile Parse(ReadOnlySpan<byte> bytes, string sourceName = "<bytes>")
    {
        if (bytes.Length < 8)
            throw new SafeTensorsFormatException($"Safetensors '{sourceName}' is truncated: {bytes.Length} bytes, the 8-byte header length is missing.");
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (headerLength > MaxHeaderBytes)
            throw new SafeTensorsFormatException($"Safetensors '{sourceName}': header length {headerLength} is implausible (limit {MaxHeaderBytes}); the file is not safetensors or is corrupt.");
        if ((ulong)bytes.Length - 8 < headerLength)
            throw new SafeTensorsFormatException($"Safetensors '{sourceName}' is truncated: the header claims {headerLength} bytes but only {bytes.Length - 8} follow.");
        var header = bytes.Slice(8, (int)headerLength);
        var data = bytes[(8 + (int)headerLength)..];
        if (header.Length == 0 || header[0] != (byte)'{')
            throw new SafeTensorsFormatException($"Safetensors '{sourceName}': the header does not start with '{{'.");

        JsonDocument doc;
        try { doc = JsonDocument.Parse(header.ToArray()); }
        catch (JsonException e) { throw new SafeTensorsFormatException($"Safetensors '{sourceName}': the header is not valid JSON: {e.Message}", e); }
        catch (ArgumentException e) { throw new SafeTensorsFormatException($"Safetensors '{sourceName}': the header is not valid UTF-8 JSON: {e.Message}", e); }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsFormatException($"Safetensors '{sourceName}': the header is not a JSON object.");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<(string Name, SafeTensorDType DType, long[] Shape, long Begin, long End)>();
            // A set, not a scan of the entries: a crafted header with many tensors must not take quadratic time.
            var names = new HashSet<string>(StringComparer.Ordinal);
            var sawMetadata = false;
            foreach (var prop in EnumerateProperties(doc.RootElement, sourceName))
            {
                if (prop.Name == MetadataKey)
                {
                    if (sawMetadata)
                        throw new SafeTensorsFormatException($"Safetensors '{sourceName}': {MetadataKey} appears twice in the header.");
                    sawMetadata = true;
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new SafeTensorsFormatException($"Safetensors '{sourceName}': {MetadataKey} must be an object of strings.");
                    foreach (var kv in EnumerateProperties(prop.Value, sourceName))
                    {
                        if (kv.Value.ValueKind != JsonValueKind.String)
                            throw new SafeTensorsFormatException($"Safetensors '{sourceName}': {MetadataKey}.{kv.Name} is not a string.");
                        metadata[kv.Name] = ReadString(kv.Value, sourceName, $"{MetadataKey}.{kv.Name}");
                    }
                    continue;
                }
                if (prop.Name.Length == 0)
                    throw new SafeTensorsFormatException($"Safetensors '{sourceName}': the header has a tensor with an empty name; every tensor needs a non-empty name.");
                if (!names.Add(prop.Name))
                    throw new SafeTensorsFormatException($"Safetensors '{sourceName}': tensor '{prop.Name}' appears twice in the header.");
                entries.Add(ParseEntry(prop, sourceName));
            }

            var ordered = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
            long cursor = 0;
            foreach (var e in ordered)
            {
                if (e.Begin < cursor)
                    throw new SafeTensorsFormatException($"Safetensors '{sourceName}': tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] overlap the previous tensor (which ends at {cursor}).");
                if (e.Begin > cursor)
                    throw new SafeTensorsFormatException($"Safetensors '{sourceName}': tensor '{e.Name}' starts at {e.Begin}, leaving a gap after offset {cursor}.");
                cursor = e.End;
            }
            if (cursor != data.Length)
                throw new SafeTensorsFormatException(cursor > data.Length
                    ? $"Safetensors '{sourceName}' is truncated: the header needs {cursor} data bytes but only {data.Length} are present."
                    : $"Safetensors '{sourceName}': {data.Length - cursor} bytes after the last tensor are not described by the header.");

            var tensors = new List<SafeTensor>(ordered.Count);
            foreach (var e in ordered)
                tensors.Add(new SafeTensor(e.Name, e.DType, e.Shape, data[(int)e.Begin..(int)e.End].ToArray()));
            return new SafeTensorsFile(tensors, metadata);
        }
    }

    private static (string, SafeTensorDType, long[], long, long) ParseEntry((string Name, JsonElement Value) prop, string source)
    {
        var name = prop.Name;
        var v = prop.Value;
        if (v.ValueKind != JsonValueKind.Object)
            throw new SafeTensorsFormatException($"Safetensors '{source}': the entry for tensor '{name}' is not an object.");
        if (!TryGetProperty(v, "dtype", source, out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new SafeTensorsFormatException($"Safetensors '{source}': tensor '{name}' has no dtype string (expected one of F32, F64, I64, I32, BOOL).");
        var dtype = ReadString(dt, source, $"tensor '{name}' dtype") switch
        {
            "F32" => SafeTensorDType.F32,
            "F64" => SafeTensorDType.F64,
            "I64" => SafeTensorDType.I64,
            "I32" => SafeTensorDType.I32,
            "BOOL" => SafeTensorDType.Bool,
            var other => throw new SafeTensorsFormatException($"Safetensors '{source}': tensor '{name}' has dtype '{other}'; supported: F32, F64, I64, I32, BOOL."),
        };
        if (!TryGetProperty(v, "shape", source, out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new SafeTensorsFormatException($"Safetensors '{source}': tensor '{name}' has no shape array.");
        var shape = new long[sh.GetArrayLength()];
        var i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var dim) || dim < 0)
                throw new SafeTensorsFormatException($"Safetensors '{source}': tensor '{name}' has an invalid dim {d.GetRawText()} in its shape (dims must be integers >= 0).");
            shape[i++] = dim;
        }
        // TryGetInt64 throws (InvalidOperationException) on a non-number, so the kinds are checked first.
        if (!TryGetProperty(v, "data_offsets", source, out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2
            || off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out var begin) || !off[1].TryGetInt64(out var end) || begin < 0 || end < begin)
            throw new SafeTensorsFormatException($"Safetensors '{source}': tensor '{name}' has invalid data_offsets (need [begin, end] with 0 <= begin <= end).");
        long expected;
        try { expected = checked(SafeTensor.ElementCount(shape) * SafeTensor.ElementSize(dtype)); }
        catch (OverflowException e) { throw new SafeTensorsFormatException($"Safetensors '{source}': tensor '{name}' shape [{string.Join(",", shape)}] overflows.", e); }
        if (end - begin != expected)
            throw new SafeTensorsFormatException($"Safetensors '{source}': tensor '{name}' data_offsets [{begin}, {end}] span {end - begin} bytes but {SafeTensor.HeaderName(dtype)}[{string.Join(",", shape)}] needs {expected}.");
        return (name, dtype, shape, begin, end);
    }

    /// <summary>The properties of an object; a name with an escaped lone surrogate becomes a format error.</summary>
    private static List<(string Name, JsonElement Value)> EnumerateProperties(JsonElement obj, string source)
    {
        var list = new List<(string, JsonElement)>();
        foreach (var p in obj.EnumerateObject())
        {
            string name;
            try { name = p.Name; }
            catch (InvalidOperationException e) { throw new SafeTensorsFormatException($"Safetensors '{source}': a header key is not a valid string: {e.Message}", e); }
            list.Add((name, p.Value));
        }
        return list;
    }

    /// <summary><see cref="JsonElement.TryGetProperty(string, out JsonElement)"/>, which throws
    /// InvalidOperationException when any key of the object holds an escaped lone surrogate.</summary>
    private static bool TryGetProperty(JsonElement obj, string name, string source, out JsonElement value)
    {
        try { return obj.TryGetProperty(name, out value); }
        catch (InvalidOperationException e) { throw new SafeTensorsFormatException($"Safetensors '{source}': a header key is not a valid string: {e.Message}", e); }
    }

    private static string ReadString(JsonElement e, string source, string field)
    {
        // GetString throws InvalidOperationException on an escaped lone surrogate ("\ud800").
        try { return e.GetString()!; }
        catch (InvalidOperationException x) { throw new SafeTensorsFormatException($"Safetensors '{source}': {field} is not a valid string: {x.Message}", x); }
    }

    /// <summary>Writes the file atomically (temp file, flush, rename). Header padded with spaces to 8 bytes.</summary>
    public void Write(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var order = Tensors.OrderByDescending(t => SafeTensor.ElementSize(t.DType)).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        var headerBytes = BuildHeader(order);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)headerBytes.Length);
            stream.Write(len);
            stream.Write(headerBytes);
            foreach (var t in order) stream.Write(t.Data);
        });
    }

    private byte[] BuildHeader(List<SafeTensor> order)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (Metadata.Count > 0)
            {
                w.WriteStartObject(MetadataKey);
                foreach (var kv in Metadata.OrderBy(k => k.Key, StringComparer.Ordinal)) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in order)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", SafeTensor.HeaderName(t.DType));
                w.WriteStartArray("shape");
                foreach (var d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + t.Data.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += t.Data.Length;
            }
            w.WriteEndObject();
        }
        var json = ms.ToArray();
        var padded = (json.Length + 7) / 8 * 8;
        var result = new byte[padded];
        json.CopyTo(result, 0);
        result.AsSpan(json.Length).Fill((byte)' ');
        return result;
    }
}
