using System.Text;
using System.Text.Json;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// JSON for tensors and metadata (SQLite columns and golden-set lines):
/// <c>{"x":{"type":"float","shape":[1,4],"data":[...]}}</c>.
/// </summary>
internal static class FeedbackJson
{
    public static string WriteTensors(IReadOnlyDictionary<string, TensorData> tensors)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            foreach (var (name, t) in tensors)
            {
                w.WriteStartObject(name);
                w.WriteString("type", t.ElementType == TensorDataType.Float ? "float" : "int64");
                w.WriteStartArray("shape");
                foreach (var d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data");
                if (t.FloatData is { } f) foreach (var v in f) w.WriteNumberValue(v);
                else foreach (var v in t.Int64Data!) w.WriteNumberValue(v);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>Reads a tensors object; <paramref name="source"/> (file and line, or store and record) starts every error message.</summary>
    /// <exception cref="OnnxTuneException">The JSON does not have the shape above; the message names the tensor and the field.</exception>
    public static Dictionary<string, TensorData> ReadTensors(JsonElement obj, string source)
    {
        if (obj.ValueKind != JsonValueKind.Object)
            throw new OnnxTuneException($"{source}: 'tensors' is {Kind(obj)}; expected an object mapping input names to {{\"type\", \"shape\", \"data\"}}.");
        var result = new Dictionary<string, TensorData>(StringComparer.Ordinal);
        foreach (var p in obj.EnumerateObject())
        {
            var name = Name(p, source);
            var v = p.Value;
            var where = $"{source}: tensor '{name}'";
            if (v.ValueKind != JsonValueKind.Object)
                throw new OnnxTuneException($"{where} is {Kind(v)}; expected an object with \"type\" (float or int64), \"shape\" and \"data\".");
            if (!TryGet(v, "type", where, out var typeEl) || typeEl.ValueKind != JsonValueKind.String)
                throw new OnnxTuneException($"{where}: field 'type' is missing or not a string; expected \"float\" or \"int64\".");
            var type = String(typeEl, where, "type");
            if (type is not ("float" or "int64"))
                throw new OnnxTuneException($"{where} has unknown type '{type}' (expected float or int64).");
            if (!TryGet(v, "shape", where, out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
                throw new OnnxTuneException($"{where}: field 'shape' is missing or not an array; expected an array of integer dims >= 0.");
            var shape = new long[shapeEl.GetArrayLength()];
            long count = 1;
            var i = 0;
            foreach (var d in shapeEl.EnumerateArray())
            {
                if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var dim) || dim < 0)
                    throw new OnnxTuneException($"{where}: shape[{i}] is {Short(d)}; expected an integer dim >= 0.");
                shape[i++] = dim;
                if (count != 0 && dim != 0 && count > long.MaxValue / dim)
                    throw new OnnxTuneException($"{where}: shape [{string.Join(",", shape.Take(i))},...] has more elements than a tensor can hold.");
                count *= dim;
            }
            if (!TryGet(v, "data", where, out var data) || data.ValueKind != JsonValueKind.Array)
                throw new OnnxTuneException($"{where}: field 'data' is missing or not an array; expected an array of {type} values.");
            if (data.GetArrayLength() != count)
                throw new OnnxTuneException($"{where}: field 'data' holds {data.GetArrayLength()} values but shape [{string.Join(",", shape)}] needs {count}.");
            if (type == "float")
            {
                var values = new float[count];
                i = 0;
                foreach (var e in data.EnumerateArray())
                {
                    if (e.ValueKind != JsonValueKind.Number || !e.TryGetSingle(out var f) || !float.IsFinite(f))
                        throw new OnnxTuneException($"{where}: data[{i}] is {Short(e)}; expected a finite float.");
                    values[i++] = f;
                }
                result[name] = TensorData.Float(values, shape);
            }
            else
            {
                var values = new long[count];
                i = 0;
                foreach (var e in data.EnumerateArray())
                {
                    if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out var l))
                        throw new OnnxTuneException($"{where}: data[{i}] is {Short(e)}; expected an int64.");
                    values[i++] = l;
                }
                result[name] = TensorData.Int64(values, shape);
            }
        }
        return result;
    }

    /// <summary>Reads a tensors JSON column; <paramref name="source"/> names the store and the record.</summary>
    /// <exception cref="OnnxTuneException">The column is not valid JSON or not a tensors object.</exception>
    public static Dictionary<string, TensorData> ReadTensors(string json, string source)
    {
        using var doc = ParseJson(json, source, "the tensors column");
        return ReadTensors(doc.RootElement, source);
    }

    public static string WriteMetadata(IReadOnlyDictionary<string, string> metadata) =>
        JsonSerializer.Serialize(metadata.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal));

    /// <summary>Reads a metadata JSON column (an object of strings); <paramref name="source"/> names the store and the record.</summary>
    /// <exception cref="OnnxTuneException">The column is not valid JSON or not an object of strings.</exception>
    public static Dictionary<string, string> ReadMetadata(string json, string source = "feedback metadata")
    {
        using var doc = ParseJson(json, source, "the metadata column");
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new OnnxTuneException($"{source}: the metadata column is {Kind(root)}; expected an object of strings.");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in root.EnumerateObject())
        {
            var name = Name(p, source);
            result[name] = p.Value.ValueKind switch
            {
                JsonValueKind.String => String(p.Value, source, $"metadata '{name}'"),
                JsonValueKind.Null => "",
                _ => throw new OnnxTuneException($"{source}: metadata '{name}' is {Kind(p.Value)}; expected a string."),
            };
        }
        return result;
    }

    /// <summary>
    /// Reads a golden set: one JSON object per line with <c>"text"</c> or <c>"tensors"</c>, and <c>"label"</c>
    /// (a name or an index). Labels are resolved later by the same rules as feedback.
    /// </summary>
    /// <exception cref="OnnxTuneException">The file is missing or unreadable, or a line is not a valid record (the message names the line and the field).</exception>
    public static List<Feedback> ReadGoldenSet(string path)
    {
        if (!File.Exists(path))
            throw new OnnxTuneException($"Golden set '{path}' does not exist.");
        const string Expected = "expected {\"text\": \"...\", \"label\": \"name\" or index} or {\"tensors\": {...}, \"label\": ...}";
        var list = new List<Feedback>();
        var lineNo = 0;
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                lineNo++;
                if (string.IsNullOrWhiteSpace(line)) continue;
                var where = $"Golden set '{path}' line {lineNo}";
                using var doc = ParseJson(line, where, "the line");
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object)
                    throw new OnnxTuneException($"{where} is {Kind(root)}; {Expected}.");
                if (!TryGet(root, "label", where, out var labelEl))
                    throw new OnnxTuneException($"{where}: field 'label' is missing; {Expected}.");
                FeedbackLabel label = labelEl.ValueKind switch
                {
                    JsonValueKind.Number when labelEl.TryGetInt64(out var index) => index,
                    JsonValueKind.String => String(labelEl, where, "label"),
                    _ => throw new OnnxTuneException($"{where}: field 'label' is {Short(labelEl)}; expected a label name (string) or a class index (integer)."),
                };
                string? text = null;
                if (TryGet(root, "text", where, out var t) && t.ValueKind != JsonValueKind.Null)
                {
                    if (t.ValueKind != JsonValueKind.String)
                        throw new OnnxTuneException($"{where}: field 'text' is {Kind(t)}; expected a string.");
                    text = String(t, where, "text");
                }
                Dictionary<string, TensorData>? tensors = null;
                if (TryGet(root, "tensors", where, out var ts) && ts.ValueKind != JsonValueKind.Null)
                    tensors = ReadTensors(ts, where);
                if (text is null && tensors is null)
                    throw new OnnxTuneException($"{where} has neither 'text' nor 'tensors'; {Expected}.");
                list.Add(new Feedback { Text = text, Tensors = tensors, Label = label });
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException)
        {
            throw new OnnxTuneException($"Cannot read golden set '{path}' (after line {lineNo}): {e.Message}", e);
        }
        return list;
    }

    private static JsonDocument ParseJson(string json, string source, string what)
    {
        try { return JsonDocument.Parse(json); }
        catch (JsonException e) { throw new OnnxTuneException($"{source}: {what} is not valid JSON: {e.Message}", e); }
    }

    /// <summary>A string value; an escaped lone surrogate (which <see cref="JsonElement.GetString"/> rejects) becomes a typed error.</summary>
    private static string String(JsonElement e, string source, string field)
    {
        try { return e.GetString()!; }
        catch (InvalidOperationException x) { throw new OnnxTuneException($"{source}: field '{field}' is not a valid string: {x.Message}", x); }
    }

    /// <summary><see cref="JsonElement.TryGetProperty(string, out JsonElement)"/>, which throws
    /// InvalidOperationException when any key of the object holds an escaped lone surrogate.</summary>
    private static bool TryGet(JsonElement obj, string name, string source, out JsonElement value)
    {
        try { return obj.TryGetProperty(name, out value); }
        catch (InvalidOperationException x) { throw new OnnxTuneException($"{source}: a property name is not a valid string ({x.Message}); looking for field '{name}'.", x); }
    }

    private static string Name(JsonProperty p, string source)
    {
        try { return p.Name; }
        catch (InvalidOperationException x) { throw new OnnxTuneException($"{source}: a property name is not a valid string: {x.Message}", x); }
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "missing",
    };

    private static string Short(JsonElement e)
    {
        var raw = e.GetRawText();
        return raw.Length <= 40 ? raw : raw[..40] + "…";
    }
}
