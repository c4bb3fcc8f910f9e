using System.Globalization;
using System.Text;
using System.Text.Json;

namespace OnnxTune.Cli.Text;

/// <summary>One labelled text: the label as written (a class name, a class index or a number) and, for JSON arrays, its values.</summary>
internal sealed record TextExample(string Text, string? Label, float[]? Values, int Line);

/// <summary>
/// Reads labelled text from CSV (a header row with <c>text</c> and <c>label</c> columns, RFC 4180 quoting) or JSON
/// Lines (one object per line with a string <c>text</c> and a <c>label</c> that is a string, a number or, for
/// multi-output regression, an array of numbers).
/// </summary>
internal static class TextDataFile
{
    public static bool IsTextData(string path) =>
        Path.GetExtension(path).ToLowerInvariant() is ".csv" or ".jsonl" or ".ndjson" or ".json";

    public static List<TextExample> Read(string path)
    {
        if (!File.Exists(path)) throw new OnnxTuneException($"Data file '{path}' does not exist.");
        List<TextExample> examples;
        try { examples = Path.GetExtension(path).Equals(".csv", StringComparison.OrdinalIgnoreCase) ? ReadCsv(path) : ReadJsonLines(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException)
        {
            throw new OnnxTuneException($"Cannot read data file '{path}': {e.Message}", e);
        }
        if (examples.Count == 0) throw new OnnxTuneException($"Data file '{path}' holds no examples.");
        return examples;
    }

    private static List<TextExample> ReadJsonLines(string path)
    {
        var result = new List<TextExample>();
        var lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new OnnxTuneException($"{path}:{lineNo}: not a JSON object ({e.Message}). JSON Lines files hold one object per line: {{\"text\": \"...\", \"label\": \"...\"}}.", e); }
            using (doc)
            {
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object)
                    throw new OnnxTuneException($"{path}:{lineNo}: expected a JSON object with fields 'text' (a string) and 'label' (a string, a number or an array of numbers), got {root.ValueKind.ToString().ToLowerInvariant()}.");
                if (!TryGet(root, "text", path, lineNo, out var text) || text.ValueKind != JsonValueKind.String)
                    throw new OnnxTuneException($"{path}:{lineNo}: field 'text' is missing or not a string; expected {{\"text\": \"...\", \"label\": ...}}.");
                string? label = null;
                float[]? values = null;
                if (TryGet(root, "label", path, lineNo, out var l))
                {
                    switch (l.ValueKind)
                    {
                        case JsonValueKind.String: label = ReadString(l, path, lineNo, "label"); break;
                        case JsonValueKind.Number: label = l.GetRawText(); values = [ReadFloat(l, path, lineNo, "label")]; break;
                        case JsonValueKind.Array:
                            var i = 0;
                            values = l.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? ReadFloat(e, path, lineNo, $"label[{i++}]")
                                : throw new OnnxTuneException($"{path}:{lineNo}: field 'label[{i}]' is {e.ValueKind.ToString().ToLowerInvariant()}; 'label' arrays must hold numbers.")).ToArray();
                            label = l.GetRawText();
                            break;
                        case JsonValueKind.Null: break;
                        default: throw new OnnxTuneException($"{path}:{lineNo}: field 'label' is {l.ValueKind.ToString().ToLowerInvariant()}; expected a string, a number or an array of numbers.");
                    }
                }
                result.Add(new TextExample(ReadString(text, path, lineNo, "text"), label, values, lineNo));
            }
        }
        return result;
    }

    /// <summary><see cref="JsonElement.TryGetProperty(string, out JsonElement)"/>, which throws
    /// InvalidOperationException when any key of the object holds an escaped lone surrogate.</summary>
    private static bool TryGet(JsonElement obj, string name, string path, int line, out JsonElement value)
    {
        try { return obj.TryGetProperty(name, out value); }
        catch (InvalidOperationException x) { throw new OnnxTuneException($"{path}:{line}: a field name is not a valid string ({x.Message}); expected fields 'text' and 'label'.", x); }
    }

    /// <summary>A string value; an escaped lone surrogate (which <see cref="JsonElement.GetString"/> rejects) becomes a typed error.</summary>
    private static string ReadString(JsonElement e, string path, int line, string field)
    {
        try { return e.GetString()!; }
        catch (InvalidOperationException x) { throw new OnnxTuneException($"{path}:{line}: field '{field}' is not a valid string ({x.Message}).", x); }
    }

    /// <summary>A number as a finite float (GetSingle throws FormatException on out-of-range values such as 1e999).</summary>
    private static float ReadFloat(JsonElement e, string path, int line, string field)
    {
        if (!e.TryGetSingle(out var v) || !float.IsFinite(v))
            throw new OnnxTuneException($"{path}:{line}: field '{field}' is {e.GetRawText()}, which is not a finite 32-bit float.");
        return v;
    }

    private static List<TextExample> ReadCsv(string path)
    {
        var rows = ParseCsv(File.ReadAllText(path, Encoding.UTF8), path);
        if (rows.Count == 0) return [];
        var header = rows[0].Fields.Select(h => h.Trim().TrimStart('\uFEFF').ToLowerInvariant()).ToList();
        var textCol = header.IndexOf("text");
        var labelCol = header.IndexOf("label");
        if (textCol < 0)
            throw new OnnxTuneException($"{path}:1: the header row has no 'text' column (columns: {string.Join(", ", header)}); expected a header with 'text' and 'label' columns.");
        var result = new List<TextExample>(rows.Count - 1);
        foreach (var (fields, line) in rows.Skip(1))
        {
            if (fields.Count == 1 && fields[0].Length == 0) continue;
            if (fields.Count != header.Count)
                throw new OnnxTuneException($"{path}:{line}: {fields.Count} fields, but the header has {header.Count} ({string.Join(", ", header)}).");
            string? label = labelCol < 0 || fields[labelCol].Length == 0 ? null : fields[labelCol];
            float[]? values = label is not null && float.TryParse(label, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? [v] : null;
            result.Add(new TextExample(fields[textCol], label, values, line));
        }
        return result;
    }

    internal static List<(List<string> Fields, int Line)> ParseCsv(string content, string path)
    {
        var rows = new List<(List<string>, int)>();
        var fields = new List<string>();
        var field = new StringBuilder();
        var line = 1;
        var rowLine = 1;
        var quoted = false;
        for (var i = 0; i < content.Length; i++)
        {
            var c = content[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < content.Length && content[i + 1] == '"') { field.Append('"'); i++; }
                    else quoted = false;
                }
                else
                {
                    if (c == '\n') line++;
                    field.Append(c);
                }
                continue;
            }
            switch (c)
            {
                case '"' when field.Length == 0: quoted = true; break;
                case ',': fields.Add(field.ToString()); field.Clear(); break;
                case '\r': break;
                case '\n':
                    fields.Add(field.ToString()); field.Clear();
                    rows.Add((fields, rowLine));
                    fields = [];
                    line++;
                    rowLine = line;
                    break;
                default: field.Append(c); break;
            }
        }
        if (quoted) throw new OnnxTuneException($"{path}:{rowLine}: a quoted field is not closed.");
        if (field.Length > 0 || fields.Count > 0)
        {
            fields.Add(field.ToString());
            rows.Add((fields, rowLine));
        }
        return rows;
    }
}
