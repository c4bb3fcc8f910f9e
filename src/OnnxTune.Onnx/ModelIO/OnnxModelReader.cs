using Google.Protobuf;
using Onnx;

namespace OnnxTune.Onnx.ModelIO;

/// <summary>Reads ONNX models into <see cref="ModelProto"/>, resolving tensors stored as external data.</summary>
public static class OnnxModelReader
{
    /// <summary>Loads a model file. External-data tensors are read from files beside it and inlined.</summary>
    /// <exception cref="OnnxModelFormatException">
    /// The file is missing, unreadable, corrupt, truncated or lacks a graph, or its external data is missing,
    /// out of range or points outside the model's folder.
    /// </exception>
    public static ModelProto Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
            throw new OnnxModelFormatException($"ONNX model path '{path}' is a folder, not a model file.");
        if (!File.Exists(path))
            throw new OnnxModelFormatException($"ONNX model file '{path}' does not exist.");
        var bytes = ReadFile(path, () => File.ReadAllBytes(path), $"ONNX model file '{path}'");
        return Parse(bytes, path, Path.GetDirectoryName(Path.GetFullPath(path)));
    }

    /// <summary>Runs a file read, turning I/O and permission errors into <see cref="OnnxModelFormatException"/>.</summary>
    internal static T ReadFile<T>(string path, Func<T> read, string what)
    {
        try { return read(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException)
        {
            throw new OnnxModelFormatException($"Cannot read {what}: {e.Message}", e);
        }
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
                case "offset": offset = ParseField(tensor, sourceName, kv.Key, kv.Value); break;
                case "length": length = ParseField(tensor, sourceName, kv.Key, kv.Value); break;
            }
        }
        if (location is null)
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' is external but has no 'location'.");
        if (baseDirectory is null)
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' uses external data '{location}', but the model was not loaded from a file.");
        var file = ResolveLocation(tensor, sourceName, baseDirectory, location);
        if (Directory.Exists(file) || !File.Exists(file))
            throw new OnnxModelFormatException($"External data file '{location}' for tensor '{tensor.Name}' was not found next to '{sourceName}'.");
        if (offset < 0)
            throw new OnnxModelFormatException($"External data for tensor '{tensor.Name}' ({location}) has a negative offset {offset}.");
        var what = $"external data file '{location}' for tensor '{tensor.Name}' in '{sourceName}'";
        var data = ReadFile(file, () =>
        {
            using var stream = File.OpenRead(file);
            if (length < 0) length = Math.Max(0, stream.Length - offset);
            // Written as a subtraction so a huge offset or length cannot overflow past the check.
            if (offset > stream.Length || length > stream.Length - offset)
                throw new OnnxModelFormatException($"External data for tensor '{tensor.Name}' ({location}, offset {offset}, length {length}) runs past the end of the file ({stream.Length} bytes).");
            if (length > Array.MaxLength)
                throw new OnnxModelFormatException($"External data for tensor '{tensor.Name}' ({location}, length {length}) is larger than one in-memory tensor can hold ({Array.MaxLength} bytes).");
            var bytes = new byte[length];
            stream.Seek(offset, SeekOrigin.Begin);
            stream.ReadExactly(bytes);
            return bytes;
        }, what);
        tensor.RawData = ByteString.CopyFrom(data);
        tensor.ExternalData.Clear();
        tensor.DataLocation = TensorProto.Types.DataLocation.Default;
    }

    private static long ParseField(TensorProto tensor, string sourceName, string field, string value)
    {
        if (!long.TryParse(value, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var result))
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' has external-data '{field}' = '{value}', which is not an integer.");
        if (field == "length" && result < 0)
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' has a negative external-data 'length' {result}.");
        return result;
    }

    /// <summary>
    /// Resolves a <c>location</c> against the model folder. Like the onnx checker and ONNX Runtime, it must be a
    /// relative path that stays inside the folder after normalisation (lexical: '..' segments, no symlink resolution).
    /// </summary>
    private static string ResolveLocation(TensorProto tensor, string sourceName, string baseDirectory, string location)
    {
        OnnxModelFormatException Rejected(string why) => new(
            $"Tensor '{tensor.Name}' in '{sourceName}' has external-data location '{location}', which {why}; it must be a relative path inside the model's folder.");
        if (location.Length == 0) throw Rejected("is empty");
        if (location.Contains('\0')) throw Rejected("contains a NUL character");
        // Also rejects Windows-style roots ('\\server', 'C:') on Unix, where Path.IsPathRooted does not see them.
        if (Path.IsPathRooted(location) || location[0] is '/' or '\\' || (location.Length >= 2 && location[1] == ':' && char.IsAsciiLetter(location[0])))
            throw Rejected("is an absolute path");
        var root = Path.GetFullPath(baseDirectory);
        if (!Path.EndsInDirectorySeparator(root)) root += Path.DirectorySeparatorChar;
        string full;
        try { full = Path.GetFullPath(Path.Combine(root, location)); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' has an invalid external-data location '{location}': {e.Message}", e);
        }
        var comparison = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        if (!full.StartsWith(root, comparison) || full.Length == root.Length)
            throw Rejected("points outside the model's folder");
        return full;
    }
}
