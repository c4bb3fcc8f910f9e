using Google.Protobuf;
using Onnx;

namespace OnnxTune.Onnx.ModelIO;

/// <summary>Reads ONNX models into <see cref="ModelProto"/>, resolving tensors stored as external data.</summary>
public static class OnnxModelReader
{
    /// <summary>Loads a model file. External-data tensors are read from files beside it and inlined.</summary>
    /// <exception cref="OnnxModelFormatException">The file is missing, corrupt, truncated or lacks a graph.</exception>
    public static ModelProto Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
            throw new OnnxModelFormatException($"ONNX model file '{path}' does not exist.");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw new OnnxModelFormatException($"Cannot read ONNX model file '{path}': {e.Message}", e); }
        return Parse(bytes, path, Path.GetDirectoryName(Path.GetFullPath(path)));
    }

    /// <summary>Parses model bytes. <paramref name="baseDirectory"/> resolves external data (null: none allowed).</summary>
    public static ModelProto Parse(ReadOnlySpan<byte> bytes, string sourceName = "<bytes>", string? baseDirectory = null)
    {
        if (bytes.Length == 0)
            throw new OnnxModelFormatException($"ONNX model '{sourceName}' is empty (0 bytes).");
        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxModelFormatException(
                $"ONNX model '{sourceName}' is corrupt or truncated ({bytes.Length} bytes): {e.Message}", e);
        }
        if (model.Graph is null || (model.Graph.Node.Count == 0 && model.Graph.Output.Count == 0))
            throw new OnnxModelFormatException($"ONNX model '{sourceName}' has no graph (is it an ONNX file?).");
        if (model.OpsetImport.Count == 0)
            throw new OnnxModelFormatException($"ONNX model '{sourceName}' declares no opset_import.");
        InlineExternalData(model.Graph, sourceName, baseDirectory);
        return model;
    }

    private static void InlineExternalData(GraphProto graph, string sourceName, string? baseDirectory)
    {
        foreach (var tensor in graph.Initializer)
            InlineExternalData(tensor, sourceName, baseDirectory);
        foreach (var node in graph.Node)
        {
            foreach (var attr in node.Attribute)
            {
                if (attr.T is not null) InlineExternalData(attr.T, sourceName, baseDirectory);
                if (attr.G is not null) InlineExternalData(attr.G, sourceName, baseDirectory);
                foreach (var g in attr.Graphs) InlineExternalData(g, sourceName, baseDirectory);
            }
        }
    }

    private static void InlineExternalData(TensorProto tensor, string sourceName, string? baseDirectory)
    {
        if (!tensor.HasDataLocation || tensor.DataLocation != TensorProto.Types.DataLocation.External)
            return;
        string? location = null;
        long offset = 0, length = -1;
        foreach (var kv in tensor.ExternalData)
        {
            switch (kv.Key)
            {
                case "location": location = kv.Value; break;
                case "offset": offset = long.Parse(kv.Value, System.Globalization.CultureInfo.InvariantCulture); break;
                case "length": length = long.Parse(kv.Value, System.Globalization.CultureInfo.InvariantCulture); break;
            }
        }
        if (location is null)
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' is external but has no 'location'.");
        if (baseDirectory is null)
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' uses external data '{location}', but the model was not loaded from a file.");
        var file = Path.GetFullPath(Path.Combine(baseDirectory, location));
        if (!File.Exists(file))
            throw new OnnxModelFormatException($"External data file '{location}' for tensor '{tensor.Name}' was not found next to '{sourceName}'.");
        using var stream = File.OpenRead(file);
        if (length < 0) length = stream.Length - offset;
        if (offset < 0 || offset + length > stream.Length)
            throw new OnnxModelFormatException($"External data for tensor '{tensor.Name}' ({location}, offset {offset}, length {length}) runs past the end of the file ({stream.Length} bytes).");
        var data = new byte[length];
        stream.Seek(offset, SeekOrigin.Begin);
        stream.ReadExactly(data);
        tensor.RawData = ByteString.CopyFrom(data);
        tensor.ExternalData.Clear();
        tensor.DataLocation = TensorProto.Types.DataLocation.Default;
    }
}
