using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxTune.Fuzz.Tests.Fuzzing;

/// <summary>
/// Deterministic mutations. Every method draws only from the <see cref="Random"/> it is given and appends what it
/// did to <see cref="Log"/>, so a failing case prints (and its seed replays) the exact mutation.
/// </summary>
internal sealed class Mutator(Random rng)
{
    private static readonly long[] InterestingInts =
        [0, 1, -1, 7, 8, 255, 256, 0x7FFF, 0xFFFF, int.MaxValue, int.MinValue, uint.MaxValue, 1L << 32, long.MaxValue, long.MinValue, 100L << 20, (100L << 20) + 1];

    /// <summary>Raw JSON tokens substituted for a value: wrong types, out-of-range numbers, bad strings.</summary>
    private static readonly string[] RawJson =
    [
        "null", "true", "false", "0", "-1", "-9223372036854775808", "9223372036854775807", "9223372036854775808",
        "18446744073709551616", "1e999", "-1e999", "1.5", "-0", "1e-400", "\"\"", "\"\\ud800\"", "\"\\udc00x\"",
        "\"../../../etc/passwd\"", "\"/etc/passwd\"", "\"a\\u0000b\"", "\"x\"", "[]", "{}", "[null]", "[-1]", "[1,2,3]",
        "[9223372036854775807,9223372036854775807]", "[4294967296,4294967296,4294967296]", "{\"a\":1,\"a\":2}",
        "\"F16\"", "\"BF16\"", "{\"\\ud800\":1}", "\"BOOL\"", "\"I64\"", "\"float\"", "\"int64\"", "\"nan\"", "\"-3\"", "\"batch\"",
    ];

    public Random Rng { get; } = rng;

    public List<string> Log { get; } = [];

    public int Next(int max) => Rng.Next(max);

    public bool Chance(double p) => Rng.NextDouble() < p;

    public T Pick<T>(IReadOnlyList<T> items) => items[Rng.Next(items.Count)];

    public long InterestingInt() => Pick(InterestingInts);

    public string Describe() => string.Join(" | ", Log);

    // ---------------------------------------------------------------- bytes

    /// <summary>1–4 random byte-level mutations (bit flip, byte set, truncation, insertion, deletion, splice,
    /// chunk duplication, overwrite with an interesting integer).</summary>
    public byte[] MutateBytes(byte[] input, byte[]? spliceSource = null)
    {
        var data = new List<byte>(input);
        var n = 1 + Rng.Next(4);
        for (var k = 0; k < n; k++)
        {
            var op = Rng.Next(8);
            var pos = data.Count == 0 ? 0 : Rng.Next(data.Count);
            switch (op)
            {
                case 0 when data.Count > 0:
                    {
                        var bit = Rng.Next(8);
                        data[pos] ^= (byte)(1 << bit);
                        Log.Add($"bitflip@{pos}.{bit}");
                        break;
                    }
                case 1 when data.Count > 0:
                    {
                        var v = (byte)Pick<int>([0, 0xFF, 0x7F, 0x80, '{', '}', '"', '[', ']', ',', ':', '\n', '\\', 0x01]);
                        data[pos] = v;
                        Log.Add($"set@{pos}=0x{v:X2}");
                        break;
                    }
                case 2:
                    {
                        var len = data.Count == 0 ? 0 : Rng.Next(data.Count);
                        data.RemoveRange(len, data.Count - len);
                        Log.Add($"truncate->{len}");
                        break;
                    }
                case 3:
                    {
                        var count = 1 + Rng.Next(16);
                        var bytes = new byte[count];
                        Rng.NextBytes(bytes);
                        data.InsertRange(pos, bytes);
                        Log.Add($"insert@{pos}:{Convert.ToHexString(bytes)}");
                        break;
                    }
                case 4 when data.Count > 0:
                    {
                        var count = Math.Min(data.Count - pos, 1 + Rng.Next(16));
                        data.RemoveRange(pos, count);
                        Log.Add($"delete@{pos}x{count}");
                        break;
                    }
                case 5:
                    {
                        var src = spliceSource ?? input;
                        if (src.Length == 0) break;
                        var from = Rng.Next(src.Length);
                        var count = Math.Min(src.Length - from, 1 + Rng.Next(64));
                        data.InsertRange(pos, src.AsSpan(from, count).ToArray());
                        Log.Add($"splice@{pos}<-[{from},{from + count})");
                        break;
                    }
                case 6 when data.Count > 0:
                    {
                        var count = Math.Min(data.Count - pos, 1 + Rng.Next(64));
                        var chunk = data.GetRange(pos, count);
                        data.InsertRange(pos, chunk);
                        Log.Add($"dup@{pos}x{count}");
                        break;
                    }
                case 7 when data.Count >= 8:
                    {
                        var v = InterestingInt();
                        var width = Chance(0.5) ? 4 : 8;
                        var at = Rng.Next(data.Count - width + 1);
                        var bytes = BitConverter.GetBytes(v);
                        for (var i = 0; i < width; i++) data[at + i] = bytes[i];
                        Log.Add($"int{width * 8}@{at}={v}");
                        break;
                    }
            }
        }
        return data.ToArray();
    }

    // ---------------------------------------------------------------- JSON

    /// <summary>Structure-aware: 1–3 edits of the JSON tree (null a value, drop a field, wrong type, bad number or
    /// string, duplicate key, deep nesting, huge array), then a byte-level mutation now and then.</summary>
    public string MutateJson(string json, double byteMutationChance = 0.2)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json); }
        catch (JsonException) { return Encoding.UTF8.GetString(MutateBytes(Encoding.UTF8.GetBytes(json))); }
        if (root is null) return json;
        var raws = new List<string>();
        var edits = 1 + Rng.Next(3);
        for (var e = 0; e < edits; e++)
            MutateNode(root, raws);
        var text = root.ToJsonString();
        for (var i = 0; i < raws.Count; i++)
            text = text.Replace($"\"__RAW{i}__\"", raws[i], StringComparison.Ordinal);
        if (Chance(byteMutationChance))
            text = Encoding.UTF8.GetString(MutateBytes(Encoding.UTF8.GetBytes(text)));
        return text;
    }

    private void MutateNode(JsonNode root, List<string> raws)
    {
        var all = new List<(JsonNode Node, string Path)>();
        Collect(root, "$", all);
        var (node, path) = Pick(all);
        var parent = node.Parent;
        string Raw(string raw)
        {
            raws.Add(raw);
            return $"__RAW{raws.Count - 1}__";
        }
        void Replace(JsonNode? value, string what)
        {
            if (parent is JsonObject o) o[node.GetPropertyName()] = value;
            else if (parent is JsonArray a) a[node.GetElementIndex()] = value;
            else return;
            Log.Add($"{path}:={what}");
        }
        switch (Rng.Next(9))
        {
            case 0: Replace(null, "null"); break;
            case 1:
                if (parent is JsonObject po) { po.Remove(node.GetPropertyName()); Log.Add($"{path}:removed"); }
                else if (parent is JsonArray pa) { pa.RemoveAt(node.GetElementIndex()); Log.Add($"{path}:removed"); }
                break;
            case 2:
            case 3:
                {
                    var raw = Pick(RawJson);
                    Replace(JsonValue.Create(Raw(raw)), raw);
                    break;
                }
            case 4:
                if (node is JsonValue v && v.TryGetValue<long>(out var l))
                {
                    var nv = Pick<long>([-l, l + 1, l - 1, l * 1000, -1, long.MaxValue, 0]);
                    Replace(JsonValue.Create(nv), nv.ToString(System.Globalization.CultureInfo.InvariantCulture));
                }
                else if (node is JsonValue sv && sv.TryGetValue<string>(out var s))
                {
                    var ns = Pick([s + s, "", s.Length > 1 ? s[..^1] : "x", " " + s, s.ToUpperInvariant(), new string('a', 5000), "../" + s, "link/" + s]);
                    Replace(JsonValue.Create(ns), $"\"{(ns.Length > 40 ? ns[..40] + "..." : ns)}\"");
                }
                break;
            case 5:
                if (node is JsonObject obj && obj.Count > 0)
                {
                    // A duplicate key is not representable in a JsonObject: splice it in as raw text.
                    var first = obj.First();
                    var raw = obj.ToJsonString();
                    var dup = $"{{{JsonSerializer.Serialize(first.Key)}:{first.Value?.ToJsonString() ?? "null"},{raw[1..]}";
                    Replace(JsonValue.Create(Raw(dup)), $"duplicate key {first.Key}");
                }
                else if (node is JsonArray arr && arr.Count > 0)
                {
                    var times = Pick([1, 2, 10, 100]);
                    var item = arr[Rng.Next(arr.Count)];
                    for (var i = 0; i < times; i++) arr.Add(item?.DeepClone());
                    Log.Add($"{path}:+{times} copies");
                }
                break;
            case 6:
                {
                    var depth = Pick([5, 63, 64, 65, 200]);
                    var raw = new string('[', depth) + new string(']', depth);
                    Replace(JsonValue.Create(Raw(raw)), $"nesting {depth}");
                    break;
                }
            case 7:
                Replace(new JsonArray(node.DeepClone()), "wrapped in []");
                break;
            case 8:
                if (node is JsonObject target)
                {
                    var key = Pick(["", "__metadata__", "extra", "dtype", "shape", "name", "label", "text", "tensors", "type", "data"]);
                    target[key] = JsonValue.Create(Raw(Pick(RawJson)));
                    Log.Add($"{path}.{key}+=raw");
                }
                break;
        }
    }

    private static void Collect(JsonNode node, string path, List<(JsonNode, string)> all)
    {
        all.Add((node, path));
        switch (node)
        {
            case JsonObject o:
                foreach (var (k, v) in o)
                    if (v is not null) Collect(v, $"{path}.{k}", all);
                break;
            case JsonArray a:
                for (var i = 0; i < a.Count; i++)
                    if (a[i] is { } v) Collect(v, $"{path}[{i}]", all);
                break;
        }
    }

    // ---------------------------------------------------------------- lines / text

    /// <summary>JSON Lines: mutate one line structurally, or drop, duplicate, join or insert lines; then bytes now and then.</summary>
    public string MutateJsonLines(string text)
    {
        var lines = text.Split('\n').ToList();
        var op = Rng.Next(6);
        var i = Rng.Next(lines.Count);
        switch (op)
        {
            case 0 or 1 or 2:
                if (lines[i].Length > 0) { Log.Add($"line {i + 1}:"); lines[i] = MutateJson(lines[i], 0.1); }
                break;
            case 3: lines.RemoveAt(i); Log.Add($"line {i + 1} removed"); break;
            case 4: lines.Insert(i, Pick(["{", "[]", "null", "42", "\"text\"", "{\"text\":", "\uFEFF{}", "\t", "{\"label\":\"a\"}"])); Log.Add($"line {i + 1} inserted"); break;
            case 5 when i + 1 < lines.Count: lines[i] += lines[i + 1]; lines.RemoveAt(i + 1); Log.Add($"lines {i + 1},{i + 2} joined"); break;
        }
        var result = string.Join('\n', lines);
        return Chance(0.15) ? Encoding.UTF8.GetString(MutateBytes(Encoding.UTF8.GetBytes(result))) : result;
    }

    /// <summary>CSV: insert or delete quotes, commas, newlines, CRs and BOMs, or mutate bytes.</summary>
    public string MutateCsv(string text)
    {
        var sb = new StringBuilder(text);
        var n = 1 + Rng.Next(3);
        for (var k = 0; k < n; k++)
        {
            var pos = Rng.Next(sb.Length + 1);
            switch (Rng.Next(4))
            {
                case 0:
                    {
                        var s = Pick(["\"", ",", "\n", "\r", "\r\n", "\"\"", "\uFEFF", ",,,,", "\"a,b\"", "\0"]);
                        sb.Insert(pos, s);
                        Log.Add($"insert@{pos}:{JsonSerializer.Serialize(s)}");
                        break;
                    }
                case 1 when sb.Length > 0:
                    {
                        var count = Math.Min(sb.Length - Math.Min(pos, sb.Length - 1), 1 + Rng.Next(8));
                        var at = Math.Min(pos, sb.Length - 1);
                        sb.Remove(at, count);
                        Log.Add($"delete@{at}x{count}");
                        break;
                    }
                case 2:
                    {
                        var len = Rng.Next(sb.Length + 1);
                        sb.Length = len;
                        Log.Add($"truncate->{len}");
                        break;
                    }
                default:
                    return Encoding.UTF8.GetString(MutateBytes(Encoding.UTF8.GetBytes(sb.ToString())));
            }
        }
        return sb.ToString();
    }
}
