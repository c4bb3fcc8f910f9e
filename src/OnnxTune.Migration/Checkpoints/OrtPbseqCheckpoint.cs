using Google.Protobuf;
using Onnx;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Migration.Checkpoints;

/// <summary>
/// Reads the checkpoint directory ONNX Runtime training wrote before its flatbuffer format: files of TensorProto
/// messages in ORT's <c>protobuf_message_sequence.h</c> wire format (varint32 count, then per message a varint32 size
/// and the bytes). <c>paramtrain_tensors.pbseq</c> / <c>paramfrozen_tensors.pbseq</c> hold the parameters,
/// <c>optim_&lt;group&gt;_&lt;state&gt;_tensors.pbseq</c> one optimizer state of every parameter (tensor named after the
/// parameter), <c>optim_&lt;group&gt;_properties.pbseq</c> the group's <c>builtin.initial_learning_rate</c> and
/// <c>builtin.step</c> scalars, <c>custom_properties.pbseq</c> user properties (scalar float, int64 or string tensors).
/// </summary>
internal static class OrtPbseqCheckpoint
{
    private const string TensorsSuffix = "_tensors.pbseq";
    private const string PropertiesSuffix = "_properties.pbseq";

    public static bool IsPbseqDirectory(string path) =>
        Directory.Exists(path) && Directory.EnumerateFiles(path, "*.pbseq").Any();

    public static OrtCheckpoint Read(string directory)
    {
        var files = Directory.EnumerateFiles(directory, "*.pbseq").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        List<OrtTensor> Params(string file) => files.Contains(file)
            ? ReadSequence(Path.Combine(directory, file)).Select(t => ToTensor(t, Path.Combine(directory, file))).ToList() : [];
        var trainable = Params("paramtrain" + TensorsSuffix);
        var frozen = Params("paramfrozen" + TensorsSuffix);
        if (trainable.Count == 0)
            throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, "paramtrain" + TensorsSuffix,
                $"'{directory}' has .pbseq files but no trainable parameters (paramtrain{TensorsSuffix}).");

        var groupStates = new Dictionary<string, Dictionary<string, Dictionary<string, OrtTensor>>>(StringComparer.Ordinal);
        var groupProps = new Dictionary<string, (long Step, float Lr)>(StringComparer.Ordinal);
        foreach (var file in files.Where(f => f!.StartsWith("optim_", StringComparison.Ordinal)))
        {
            var path = Path.Combine(directory, file!);
            var stem = file!["optim_".Length..];
            if (stem.EndsWith(PropertiesSuffix, StringComparison.Ordinal))
            {
                var group = stem[..^PropertiesSuffix.Length];
                var props = ReadSequence(path).ToDictionary(t => t.Name, StringComparer.Ordinal);
                // ORT 1.14/1.15 names; the first api_test drafts used learning_rate_ / step_.
                var lr = props.GetValueOrDefault("builtin.initial_learning_rate") ?? props.GetValueOrDefault("learning_rate_");
                var step = props.GetValueOrDefault("builtin.step") ?? props.GetValueOrDefault("step_");
                if (lr is null || step is null)
                    throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, file!, $"'{path}' lacks builtin.initial_learning_rate or builtin.step (has: {string.Join(", ", props.Keys)}).");
                groupProps[group] = (ScalarInt(step, path), (float)ScalarFloat(lr, path));
            }
            else if (stem.EndsWith(TensorsSuffix, StringComparison.Ordinal))
            {
                var rest = stem[..^TensorsSuffix.Length];
                var cut = rest.IndexOf('_', StringComparison.Ordinal);
                if (cut <= 0)
                    throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, file!, $"'{path}': optimizer state files are named optim_<group>_<state>{TensorsSuffix}.");
                var (group, state) = (rest[..cut], rest[(cut + 1)..]);
                if (!groupStates.TryGetValue(group, out var byParam)) groupStates[group] = byParam = new(StringComparer.Ordinal);
                foreach (var t in ReadSequence(path))
                {
                    if (!byParam.TryGetValue(t.Name, out var moments)) byParam[t.Name] = moments = new(StringComparer.Ordinal);
                    moments[state] = ToTensor(t, path) with { Name = state };
                }
            }
        }
        var groups = groupProps.Keys.Union(groupStates.Keys).Order(StringComparer.Ordinal).Select(g =>
        {
            if (!groupProps.TryGetValue(g, out var p))
                throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, $"optim_{g}{PropertiesSuffix}", $"'{directory}' has optimizer state for group '{g}' but no optim_{g}{PropertiesSuffix} (step, learning rate).");
            var states = groupStates.GetValueOrDefault(g)?.ToDictionary(kv => kv.Key, kv => (IReadOnlyDictionary<string, OrtTensor>)kv.Value, StringComparer.Ordinal)
                ?? new Dictionary<string, IReadOnlyDictionary<string, OrtTensor>>();
            return new OrtOptimizerGroup(g, p.Step, p.Lr, states);
        }).ToList();

        var properties = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var file in files.Where(f => f!.StartsWith("custom", StringComparison.Ordinal)))
        {
            var path = Path.Combine(directory, file!);
            foreach (var t in ReadSequence(path))
                properties[t.Name] = (DataType)t.DataType switch
                {
                    DataType.Int64 => ScalarInt(t, path),
                    DataType.Float => (float)ScalarFloat(t, path),
                    DataType.String when t.StringData.Count == 1 => t.StringData[0].ToStringUtf8(),
                    _ => throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, t.Name, $"'{path}': property '{t.Name}' is a {(DataType)t.DataType} tensor; ORT properties are scalar int64, float or string."),
                };
        }
        return new OrtCheckpoint
        {
            Format = OrtCheckpointFormat.ProtobufSequence,
            Trainable = trainable,
            Frozen = frozen,
            OptimizerGroups = groups,
            Properties = properties,
        };
    }

    /// <summary>Reads one <c>.pbseq</c> file: a varint32 message count, then per message a varint32 size and the bytes.</summary>
    internal static List<TensorProto> ReadSequence(string path)
    {
        using var stream = File.OpenRead(path);
        var input = new CodedInputStream(stream);
        try
        {
            var count = input.ReadLength();
            var result = new List<TensorProto>(count);
            for (var i = 0; i < count; i++)
            {
                var t = new TensorProto();
                input.ReadMessage(t);
                result.Add(t);
            }
            if (!input.IsAtEnd)
                throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, path, $"'{path}' has bytes after its {count} messages: not a TensorProto sequence.");
            return result;
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, path, $"'{path}' is not a length-prefixed TensorProto sequence: {e.Message}", e);
        }
    }

    /// <summary>Writes one <c>.pbseq</c> file in the same format (tests and tools).</summary>
    internal static void WriteSequence(string path, IEnumerable<TensorProto> tensors)
    {
        var list = tensors.ToList();
        using var stream = File.Create(path);
        var output = new CodedOutputStream(stream);
        output.WriteLength(list.Count);
        foreach (var t in list) output.WriteMessage(t);
        output.Flush();
    }

    private static OrtTensor ToTensor(TensorProto t, string path)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new OrtImportException(OrtImportErrorKind.ExternalData, t.Name, $"'{path}': tensor '{t.Name}' uses external data, which the importer does not read.");
        var dims = t.Dims.ToArray();
        return (DataType)t.DataType switch
        {
            DataType.Float => new OrtTensor(t.Name, dims, false, ToBytes(TensorProtos.ToFloatArray(t))),
            DataType.Double => new OrtTensor(t.Name, dims, true, ToBytes(TensorProtos.ToDoubleArray(t))),
            _ => throw new OrtImportException(OrtImportErrorKind.UnsupportedTensorType, t.Name, $"'{path}': tensor '{t.Name}' has element type {(DataType)t.DataType}; only FLOAT and DOUBLE parameters are imported."),
        };
    }

    private static byte[] ToBytes<T>(T[] values) where T : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static long ScalarInt(TensorProto t, string path) => (DataType)t.DataType == DataType.Int64
        ? TensorProtos.ToInt64Array(t).Single()
        : throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, t.Name, $"'{path}': '{t.Name}' should be an int64 scalar, not {(DataType)t.DataType}.");

    private static double ScalarFloat(TensorProto t, string path) => (DataType)t.DataType == DataType.Float
        ? TensorProtos.ToFloatArray(t).Single()
        : throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, t.Name, $"'{path}': '{t.Name}' should be a float scalar, not {(DataType)t.DataType}.");
}
