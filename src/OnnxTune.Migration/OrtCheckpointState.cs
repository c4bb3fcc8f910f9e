using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Migration.Checkpoints;
using OnnxTune.Migration.Import;
using OnnxTune.Training;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Migration;

/// <summary>
/// ONNX Runtime's <c>CheckpointState</c> (Microsoft.ML.OnnxRuntime.Training) with the same members, over OnnxTune:
/// loads ORT checkpoints (flatbuffer file or .pbseq directory) and OnnxTune checkpoints; once an
/// <see cref="OrtTrainingSession"/> uses it, parameters are read from and written to that session.
/// Named <c>OrtCheckpointState</c> so it never clashes with ORT's type under <c>using Microsoft.ML.OnnxRuntime;</c>.
/// </summary>
public sealed class OrtCheckpointState : IDisposable
{
    private readonly Dictionary<string, object> _properties;
    private TrainingEngine? _engine;
    private string? _artifactsDirectory;

    private OrtCheckpointState(string path, OrtCheckpoint? ort, Dictionary<string, object> properties)
    {
        Path = path;
        Ort = ort;
        _properties = properties;
    }

    /// <summary>Where the state was loaded from.</summary>
    public string Path { get; }

    /// <summary>The ORT checkpoint, when the state came from one (null for an OnnxTune checkpoint).</summary>
    internal OrtCheckpoint? Ort { get; private set; }

    internal IReadOnlyDictionary<string, object> Properties => _properties;

    internal void Bind(TrainingEngine engine, string artifactsDirectory)
    {
        _engine = engine;
        _artifactsDirectory = artifactsDirectory;
    }

    /// <summary>Loads an ORT checkpoint (flatbuffer file or .pbseq directory) or an OnnxTune checkpoint folder.</summary>
    /// <exception cref="OrtImportException">An ORT checkpoint that cannot be read (nominal, external data, corrupt...).</exception>
    public static OrtCheckpointState LoadCheckpoint(string checkpointPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpointPath);
        if (CheckpointStore.Exists(checkpointPath))
        {
            var (meta, _) = CheckpointStore.Load(checkpointPath);
            return new OrtCheckpointState(checkpointPath, null, TypedProperties(meta.UserProperties));
        }
        var ort = OrtCheckpointReader.Read(checkpointPath);
        return new OrtCheckpointState(checkpointPath, ort, new Dictionary<string, object>(ort.Properties, StringComparer.Ordinal));
    }

    /// <summary>
    /// Saves the state as an OnnxTune checkpoint folder at <paramref name="checkpointPath"/> (parameters, optimizer
    /// state, step, learning rate, properties; <see cref="LoadCheckpoint"/> reads it back). A file already at that path
    /// (an ORT flatbuffer checkpoint) is replaced. OnnxTune checkpoints always carry the optimizer state, so
    /// <paramref name="includeOptimizerState"/> is accepted for ORT's signature only.
    /// </summary>
    /// <exception cref="InvalidOperationException">No <see cref="OrtTrainingSession"/> was created with this state yet.</exception>
    public static void SaveCheckpoint(OrtCheckpointState state, string checkpointPath, bool includeOptimizerState = false)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentException.ThrowIfNullOrEmpty(checkpointPath);
        _ = includeOptimizerState;
        var engine = state._engine ?? throw new InvalidOperationException("SaveCheckpoint needs a training session: create an OrtTrainingSession with this state first.");
        if (File.Exists(checkpointPath)) File.Delete(checkpointPath);
        engine.SaveCheckpoint(checkpointPath, state.StringProperties());
    }

    /// <summary>Adds or updates an int property.</summary>
    public void AddProperty(string propertyName, long propertyValue) => _properties[Check(propertyName)] = propertyValue;

    /// <summary>Adds or updates a float property.</summary>
    public void AddProperty(string propertyName, float propertyValue) => _properties[Check(propertyName)] = propertyValue;

    /// <summary>Adds or updates a string property.</summary>
    public void AddProperty(string propertyName, string propertyValue)
    {
        ArgumentNullException.ThrowIfNull(propertyValue);
        _properties[Check(propertyName)] = propertyValue;
    }

    /// <summary>The property's value: a <see cref="long"/>, <see cref="float"/> or <see cref="string"/>.</summary>
    /// <exception cref="ArgumentException">No property has that name.</exception>
    public object GetProperty(string propertyName) =>
        _properties.TryGetValue(propertyName, out var v) ? v
            : throw new ArgumentException($"The checkpoint state has no property '{propertyName}' (properties: {string.Join(", ", _properties.Keys)}).", nameof(propertyName));

    /// <summary>A copy of a parameter as a float tensor (the caller disposes it).</summary>
    /// <exception cref="ArgumentException">No parameter has that name.</exception>
    public OrtValue GetParameter(string parameterName)
    {
        if (_engine is { } engine)
        {
            var spec = engine.Manifest.TrainableParameters.FirstOrDefault(p => p.Name == parameterName)
                ?? throw new ArgumentException($"'{parameterName}' is not a trainable parameter of the session (parameters: {string.Join(", ", engine.ParameterNames)}).", nameof(parameterName));
            return OrtValue.CreateTensorValueFromMemory(engine.GetParameter(parameterName), spec.FixedDims);
        }
        var t = Ort?.Trainable.Concat(Ort.Frozen).FirstOrDefault(p => p.Name == parameterName)
            ?? throw new ArgumentException($"The checkpoint state has no parameter '{parameterName}'{(Ort is null ? " loaded before a session was created" : "")}.", nameof(parameterName));
        if (t.IsDouble)
            return OrtValue.CreateTensorValueFromMemory(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(t.Data).ToArray(), t.Dims);
        return OrtValue.CreateTensorValueFromMemory(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.Data).ToArray(), t.Dims);
    }

    /// <summary>Replaces a trainable parameter's values.</summary>
    /// <exception cref="ArgumentException">Not a float tensor, unknown name, or a different element count.</exception>
    public void UpdateParameter(string parameterName, OrtValue parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        if (parameter.OnnxType != OnnxValueType.ONNX_TYPE_TENSOR || parameter.GetTensorTypeAndShape().ElementDataType != TensorElementType.Float)
            throw new ArgumentException("Incorrect buffer received. Expected a float tensor parameter.", nameof(parameter));
        var values = parameter.GetTensorDataAsSpan<float>();
        if (_engine is { } engine)
        {
            if (!engine.ParameterNames.Contains(parameterName))
                throw new ArgumentException($"'{parameterName}' is not a trainable parameter of the session.", nameof(parameterName));
            engine.SetParameter(parameterName, values);
            return;
        }
        var ort = Ort ?? throw new InvalidOperationException("An OnnxTune checkpoint's parameters can be updated once a session uses the state.");
        var t = ort.Trainable.FirstOrDefault(p => p.Name == parameterName)
            ?? throw new ArgumentException($"The checkpoint has no trainable parameter '{parameterName}'.", nameof(parameterName));
        if (t.IsDouble || values.Length != t.ElementCount)
            throw new ArgumentException($"Parameter '{parameterName}' holds {t.ElementCount} {(t.IsDouble ? "double" : "float")} values; {values.Length} floats were given.", nameof(parameterName));
        var updated = t with { Data = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).ToArray() };
        Ort = ort with { Trainable = ort.Trainable.Select(p => p.Name == parameterName ? updated : p).ToList() };
    }

    /// <summary>Kept for ORT's shape (<c>CheckpointState</c> is a SafeHandle); nothing native to release.</summary>
    public void Dispose() => _engine = null;

    internal Dictionary<string, string> StringProperties()
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in _properties)
            (result[name], types[name]) = value switch
            {
                long l => (l.ToString(CultureInfo.InvariantCulture), "int"),
                float f => (f.ToString("R", CultureInfo.InvariantCulture), "float"),
                _ => ((string)value, "string"),
            };
        result[OrtArtifactImporter.PropertyTypesProperty] = JsonSerializer.Serialize(types);
        if (_artifactsDirectory is not null) result[Training.Artifacts.ArtifactGenerator.ArtifactsProperty] = _artifactsDirectory;
        return result;
    }

    private static Dictionary<string, object> TypedProperties(IReadOnlyDictionary<string, string> stored)
    {
        var types = stored.TryGetValue(OrtArtifactImporter.PropertyTypesProperty, out var json)
            ? JsonSerializer.Deserialize<Dictionary<string, string>>(json) ?? [] : [];
        var result = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var (name, type) in types)
            if (stored.TryGetValue(name, out var text))
                result[name] = type switch
                {
                    "int" => long.Parse(text, CultureInfo.InvariantCulture),
                    "float" => float.Parse(text, CultureInfo.InvariantCulture),
                    _ => text,
                };
        return result;
    }

    private static string Check(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return name;
    }
}
