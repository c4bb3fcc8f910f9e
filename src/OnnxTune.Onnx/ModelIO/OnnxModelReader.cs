using Google.Protobuf;
using Onnx;

namespace OnnxTune.Onnx.ModelIO;

/// <summary>Reads ONNX models into <see cref="ModelProto"/>, resolving tensors stored as external data.</summary>
public static class OnnxModelReader
{
    /// <summary>Loads a model file. External-data tensors are read from files beside it and inlined.</summary>
    /// <exception cref="OnnxModelFormatException">
    /// The file is missing, unreadable, corrupt, truncated or lacks a graph, or its external data is missing,
    /// out of range, over the external-data budget or points outside the model's folder.
    /// </exception>
    public static ModelProto Load(string path) => Load(path, null);

    /// <summary>Loads a model file with <paramref name="options"/> (null: the defaults).</summary>
    /// <exception cref="OnnxModelFormatException">See <see cref="Load(string)"/>.</exception>
    public static ModelProto Load(string path, OnnxModelReaderOptions? options)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
            throw new OnnxModelFormatException($"ONNX model path '{path}' is a folder, not a model file.");
        if (!File.Exists(path))
            throw new OnnxModelFormatException($"ONNX model file '{path}' does not exist.");
        // Parsed from a stream, not from the file's bytes: a model's weights are then held once (in the parsed
        // tensors) rather than twice while it loads.
        var (model, length) = ReadFile(path, () =>
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
            if (stream.Length == 0) return ((ModelProto?)null, 0L);
            try
            {
                return (ModelProto.Parser.ParseFrom(stream), stream.Length);
            }
            catch (InvalidProtocolBufferException e)
            {
                throw new OnnxModelFormatException(
                    $"ONNX model '{path}' is corrupt or truncated ({stream.Length} bytes): {e.Message}", e);
            }
        }, $"ONNX model file '{path}'");
        if (model is null)
            throw new OnnxModelFormatException($"ONNX model '{path}' is empty (0 bytes).");
        return Check(model, path, Path.GetDirectoryName(Path.GetFullPath(path)), options);
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
    /// <exception cref="OnnxModelFormatException">The bytes are not a readable model, or its external data is bad.</exception>
    public static ModelProto Parse(ReadOnlySpan<byte> bytes, string sourceName = "<bytes>", string? baseDirectory = null) =>
        Parse(bytes, sourceName, baseDirectory, null);

    /// <summary>Parses model bytes with <paramref name="options"/> (null: the defaults).</summary>
    /// <exception cref="OnnxModelFormatException">The bytes are not a readable model, or its external data is bad.</exception>
    public static ModelProto Parse(ReadOnlySpan<byte> bytes, string sourceName, string? baseDirectory, OnnxModelReaderOptions? options)
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
        return Check(model, sourceName, baseDirectory, options);
    }

    private static ModelProto Check(ModelProto model, string sourceName, string? baseDirectory, OnnxModelReaderOptions? options)
    {
        if (model.Graph is null || (model.Graph.Node.Count == 0 && model.Graph.Output.Count == 0))
            throw new OnnxModelFormatException($"ONNX model '{sourceName}' has no graph (is it an ONNX file?).");
        if (model.OpsetImport.Count == 0)
            throw new OnnxModelFormatException($"ONNX model '{sourceName}' declares no opset_import.");
        var context = new ExternalDataContext(sourceName, baseDirectory, options?.MaxExternalDataBytes);
        InlineExternalData(model.Graph, context);
        return model;
    }

    /// <summary>State of one model's external-data pass: the folder and the byte budget across all tensors.</summary>
    private sealed class ExternalDataContext(string sourceName, string? baseDirectory, long? maxBytes)
    {
        public string SourceName { get; } = sourceName;
        public string? BaseDirectory { get; } = baseDirectory;
        public string? RealBaseDirectory { get; set; }
        public long? MaxBytes { get; } = maxBytes;

        /// <summary>Sizes of the distinct external files referenced so far (by resolved path).</summary>
        public Dictionary<string, long> FileSizes { get; } = new(StringComparer.Ordinal);
        public long FileBytes { get; set; }
        public long InlinedBytes { get; set; }

        /// <summary>Without an explicit cap: each byte present in the external files once, plus a small allowance
        /// for tensors that legitimately share a range.</summary>
        public long Budget => MaxBytes ?? FileBytes + OnnxModelReaderOptions.DefaultSharedRangeAllowance;
    }

    private static void InlineExternalData(GraphProto graph, ExternalDataContext context)
    {
        foreach (var tensor in graph.Initializer)
            InlineExternalData(tensor, context);
        foreach (var node in graph.Node)
        {
            foreach (var attr in node.Attribute)
            {
                if (attr.T is not null) InlineExternalData(attr.T, context);
                foreach (var t in attr.Tensors) InlineExternalData(t, context);
                if (attr.G is not null) InlineExternalData(attr.G, context);
                foreach (var g in attr.Graphs) InlineExternalData(g, context);
            }
        }
    }

    private static void InlineExternalData(TensorProto tensor, ExternalDataContext context)
    {
        if (!tensor.HasDataLocation || tensor.DataLocation != TensorProto.Types.DataLocation.External)
            return;
        var sourceName = context.SourceName;
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
        if (context.BaseDirectory is null)
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' uses external data '{location}', but the model was not loaded from a file.");
        var file = ResolveLocation(tensor, context, location);
        if (offset < 0)
            throw new OnnxModelFormatException($"External data for tensor '{tensor.Name}' ({location}) has a negative offset {offset}.");
        var what = $"external data file '{location}' for tensor '{tensor.Name}' in '{sourceName}'";
        var data = ReadFile(file, () =>
        {
            using var stream = File.OpenRead(file);
            if (!stream.CanSeek)
                throw new OnnxModelFormatException($"External data file '{location}' for tensor '{tensor.Name}' in '{sourceName}' is not a regular file.");
            var fileLength = stream.Length;
            if (context.FileSizes.TryAdd(file, fileLength))
                context.FileBytes += fileLength;
            if (length < 0) length = Math.Max(0, fileLength - offset);
            // Written as a subtraction so a huge offset or length cannot overflow past the check.
            if (offset > fileLength || length > fileLength - offset)
                throw new OnnxModelFormatException($"External data for tensor '{tensor.Name}' ({location}, offset {offset}, length {length}) runs past the end of the file ({fileLength} bytes).");
            if (length > Array.MaxLength)
                throw new OnnxModelFormatException($"External data for tensor '{tensor.Name}' ({location}, length {length}) is larger than one in-memory tensor can hold ({Array.MaxLength} bytes).");
            // Checked before allocating: many tensors pointing at one large range must not allocate it each time.
            if (length > context.Budget - context.InlinedBytes)
                throw new OnnxModelFormatException(context.MaxBytes is { } cap
                    ? $"External data for tensor '{tensor.Name}' ({location}, length {length}) in '{sourceName}' exceeds the external-data budget: {context.InlinedBytes} bytes already read, limit {cap} (OnnxModelReaderOptions.MaxExternalDataBytes)."
                    : $"External data for tensor '{tensor.Name}' ({location}, length {length}) in '{sourceName}' exceeds the external-data budget: the tensors would read {context.InlinedBytes + length} bytes, but the external files referenced hold only {context.FileBytes} (+{OnnxModelReaderOptions.DefaultSharedRangeAllowance} allowed for shared ranges); many tensors point at the same data. Set OnnxModelReaderOptions.MaxExternalDataBytes to allow it.");
            var bytes = new byte[length];
            stream.Seek(offset, SeekOrigin.Begin);
            stream.ReadExactly(bytes);
            context.InlinedBytes += length;
            return bytes;
        }, what);
        // The array is fresh and never written again, so it is wrapped rather than copied.
        tensor.RawData = UnsafeByteOperations.UnsafeWrap(data);
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
    /// relative path that stays inside the folder after normalisation ('..' segments); then symbolic links (of the
    /// file and of every folder on its path) are resolved and the final target must still be inside the model's
    /// (resolved) folder, so a link placed in the folder cannot reach files outside it.
    /// </summary>
    private static string ResolveLocation(TensorProto tensor, ExternalDataContext context, string location)
    {
        var sourceName = context.SourceName;
        OnnxModelFormatException Rejected(string why) => new(
            $"Tensor '{tensor.Name}' in '{sourceName}' has external-data location '{location}', which {why}; it must be a relative path inside the model's folder.");
        if (location.Length == 0) throw Rejected("is empty");
        if (location.Contains('\0')) throw Rejected("contains a NUL character");
        // Also rejects Windows-style roots ('\\server', 'C:') on Unix, where Path.IsPathRooted does not see them.
        if (Path.IsPathRooted(location) || location[0] is '/' or '\\' || (location.Length >= 2 && location[1] == ':' && char.IsAsciiLetter(location[0])))
            throw Rejected("is an absolute path");
        var root = WithSeparator(Path.GetFullPath(context.BaseDirectory!));
        string full;
        try { full = Path.GetFullPath(Path.Combine(root, location)); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}' has an invalid external-data location '{location}': {e.Message}", e);
        }
        if (!IsInside(full, root))
            throw Rejected("points outside the model's folder");

        string real;
        try
        {
            context.RealBaseDirectory ??= WithSeparator(ResolveLinks(root));
            real = ResolveLinks(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.SecurityException or ArgumentException)
        {
            throw new OnnxModelFormatException($"Tensor '{tensor.Name}' in '{sourceName}': cannot resolve external-data location '{location}': {e.Message}", e);
        }
        if (!IsInside(real, context.RealBaseDirectory))
            throw Rejected($"is a symbolic link (or lies under one) that resolves to '{real}', outside the model's folder");
        if (Directory.Exists(real) || !File.Exists(real))
            throw new OnnxModelFormatException($"External data file '{location}' for tensor '{tensor.Name}' was not found next to '{sourceName}'.");
        return real;
    }

    private static string WithSeparator(string path) => Path.EndsInDirectorySeparator(path) ? path : path + Path.DirectorySeparatorChar;

    private static bool IsInside(string path, string rootWithSeparator)
    {
        var comparison = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        return path.StartsWith(rootWithSeparator, comparison) && path.Length > rootWithSeparator.Length;
    }

    /// <summary>
    /// The path with every symbolic link on it resolved (like POSIX <c>realpath</c>, but a missing final part is
    /// kept as is): walks the parts from the root, replacing each link by its target, at most 40 links.
    /// </summary>
    internal static string ResolveLinks(string path)
    {
        var full = Path.GetFullPath(path);
        var current = Path.GetPathRoot(full)!;
        var pending = new List<string>(Split(full));
        var links = 0;
        var i = 0;
        while (i < pending.Count)
        {
            var part = pending[i++];
            if (part is "" or ".") continue;
            if (part == "..")
            {
                current = Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(current)) ?? current;
                continue;
            }
            var next = Path.Combine(current, part);
            var target = new FileInfo(next).LinkTarget;
            if (target is null)
            {
                current = next;
                continue;
            }
            if (++links > 40)
                throw new IOException($"Too many levels of symbolic links at '{next}'.");
            // The link's target replaces it; a relative target is relative to the link's folder.
            if (Path.IsPathRooted(target)) current = Path.GetPathRoot(Path.GetFullPath(target))!;
            pending = [.. Split(target), .. pending.Skip(i)];
            i = 0;
        }
        return current;
    }

    private static string[] Split(string path)
    {
        var root = Path.GetPathRoot(path) ?? "";
        return path[root.Length..].Split(['/', Path.DirectorySeparatorChar], StringSplitOptions.RemoveEmptyEntries);
    }
}

/// <summary>Options of <see cref="OnnxModelReader"/>.</summary>
public sealed class OnnxModelReaderOptions
{
    /// <summary>With no <see cref="MaxExternalDataBytes"/>: how many bytes beyond the size of the external files
    /// may be inlined, for tensors that share a range (16 MiB).</summary>
    public const long DefaultSharedRangeAllowance = 16L << 20;

    /// <summary>
    /// The most bytes of external data inlined across the whole model. Null (the default): the total size of the
    /// distinct external-data files the model references plus <see cref="DefaultSharedRangeAllowance"/>, so many
    /// tensors pointing at one large range are refused instead of allocating it again and again.
    /// </summary>
    public long? MaxExternalDataBytes { get; init; }
}
