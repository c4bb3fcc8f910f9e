using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Text.Labels;

/// <summary>
/// Two-way map between class (intent) names and the indices a classifier head predicts. Index <c>i</c> is
/// <c>Names[i]</c>; names are case-sensitive. Saved as JSON: <c>{"format_version":1,"labels":["a","b",...]}</c>.
/// </summary>
public sealed class LabelMap
{
    private readonly string[] _names;
    private readonly Dictionary<string, int> _index;

    /// <summary>Creates a map in the given order; name <c>i</c> gets index <c>i</c>.</summary>
    /// <exception cref="LabelMapFormatException">A name is empty or repeated.</exception>
    public LabelMap(IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        _names = names.ToArray();
        _index = new Dictionary<string, int>(_names.Length, StringComparer.Ordinal);
        for (var i = 0; i < _names.Length; i++)
        {
            if (string.IsNullOrEmpty(_names[i]))
                throw new LabelMapFormatException($"label {i} is empty");
            if (!_index.TryAdd(_names[i], i))
                throw new LabelMapFormatException($"label '{_names[i]}' appears twice (indices {_index[_names[i]]} and {i})");
        }
    }

    /// <summary>Builds a map from the labels of a data set: distinct names in ordinal order, so the same data gives the same map.</summary>
    public static LabelMap FromLabels(IEnumerable<string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        return new LabelMap(labels.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal));
    }

    /// <summary>Number of classes.</summary>
    public int Count => _names.Length;

    /// <summary>Class names by index.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Index of <paramref name="name"/>.</summary>
    /// <exception cref="UnknownLabelException">The name is not in the map.</exception>
    public int IndexOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _index.TryGetValue(name, out var i) ? i : throw new UnknownLabelException(name, _names.Length);
    }

    /// <summary>Looks up <paramref name="name"/> without throwing.</summary>
    public bool TryGetIndex(string name, out int index)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _index.TryGetValue(name, out index);
    }

    /// <summary>Whether the map holds <paramref name="name"/>.</summary>
    public bool Contains(string name) => _index.ContainsKey(name);

    /// <summary>Name of class <paramref name="index"/>.</summary>
    public string NameOf(int index)
    {
        if ((uint)index >= (uint)_names.Length)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Class index {index} is outside the label map of {_names.Length} labels.");
        return _names[index];
    }

    /// <summary>Indices of many names (for example a data set's label column).</summary>
    /// <exception cref="UnknownLabelException">A name is not in the map.</exception>
    public int[] IndicesOf(IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        return names.Select(IndexOf).ToArray();
    }

    /// <summary>Writes the map as JSON atomically.</summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(new LabelMapFile(CurrentFormatVersion, _names), Json));
    }

    /// <summary>Reads a map written by <see cref="Save"/>.</summary>
    /// <exception cref="LabelMapFormatException">The file is missing, not JSON, of another format version, or holds empty or repeated names.</exception>
    public static LabelMap Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
            throw new LabelMapFormatException($"file '{path}' does not exist");
        LabelMapFile? file;
        try
        {
            file = JsonSerializer.Deserialize<LabelMapFile>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw new LabelMapFormatException($"'{path}' is not valid label map JSON ({e.Message})", e);
        }
        if (file?.Labels is null)
            throw new LabelMapFormatException($"'{path}' has no 'labels' array");
        if (file.FormatVersion != CurrentFormatVersion)
            throw new LabelMapFormatException($"'{path}' has format_version {file.FormatVersion}; expected {CurrentFormatVersion}");
        try
        {
            return new LabelMap(file.Labels);
        }
        catch (LabelMapFormatException e)
        {
            throw new LabelMapFormatException($"'{path}': {e.Problem}", e);
        }
    }

    private const int CurrentFormatVersion = 1;

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private sealed record LabelMapFile(int FormatVersion, [property: JsonRequired] string[] Labels);
}

/// <summary>A label name is not in the <see cref="LabelMap"/>.</summary>
public sealed class UnknownLabelException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public UnknownLabelException(string label, int knownCount)
        : base($"Label '{label}' is not in the label map ({knownCount} known labels).")
    {
        Label = label;
    }

    /// <summary>The unknown name.</summary>
    public string Label { get; }
}

/// <summary>A label map (or its file) is malformed.</summary>
public sealed class LabelMapFormatException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public LabelMapFormatException(string problem, Exception? inner = null)
        : base($"Invalid label map: {problem}.", inner)
    {
        Problem = problem;
    }

    /// <summary>What is wrong, without the prefix.</summary>
    public string Problem { get; }
}
