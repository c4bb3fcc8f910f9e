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

    public static Dictionary<string, TensorData> ReadTensors(JsonElement obj, string source)
    {
        var result = new Dictionary<string, TensorData>(StringComparer.Ordinal);
        foreach (var p in obj.EnumerateObject())
        {
            var type = p.Value.GetProperty("type").GetString();
            var shape = p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var data = p.Value.GetProperty("data");
            result[p.Name] = type switch
            {
                "float" => TensorData.Float(data.EnumerateArray().Select(e => e.GetSingle()).ToArray(), shape),
                "int64" => TensorData.Int64(data.EnumerateArray().Select(e => e.GetInt64()).ToArray(), shape),
                _ => throw new OnnxTuneException($"{source}: tensor '{p.Name}' has unknown type '{type}' (expected float or int64)."),
            };
        }
        return result;
    }

    public static Dictionary<string, TensorData> ReadTensors(string json, string source)
    {
        using var doc = JsonDocument.Parse(json);
        return ReadTensors(doc.RootElement, source);
    }

    public static string WriteMetadata(IReadOnlyDictionary<string, string> metadata) =>
        JsonSerializer.Serialize(metadata.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal));

    public static Dictionary<string, string> ReadMetadata(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? "", StringComparer.Ordinal);
    }

    /// <summary>
    /// Reads a golden set: one JSON object per line with <c>"text"</c> or <c>"tensors"</c>, and <c>"label"</c>
    /// (a name or an index). Labels are resolved later by the same rules as feedback.
    /// </summary>
    public static List<Feedback> ReadGoldenSet(string path)
    {
        var list = new List<Feedback>();
        var lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                var labelEl = root.GetProperty("label");
                FeedbackLabel label = labelEl.ValueKind == JsonValueKind.Number ? labelEl.GetInt64() : labelEl.GetString()!;
                list.Add(new Feedback
                {
                    Text = root.TryGetProperty("text", out var t) ? t.GetString() : null,
                    Tensors = root.TryGetProperty("tensors", out var ts) ? ReadTensors(ts, $"{path}:{lineNo}") : null,
                    Label = label,
                });
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or ArgumentException or FormatException)
            {
                throw new OnnxTuneException($"Golden set '{path}' line {lineNo} is not a valid record: {e.Message}", e);
            }
        }
        return list;
    }
}
