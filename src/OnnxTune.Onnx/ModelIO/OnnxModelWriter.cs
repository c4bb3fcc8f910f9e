using Google.Protobuf;
using Onnx;

namespace OnnxTune.Onnx.ModelIO;

/// <summary>Writes ONNX models atomically: temp file in the same folder, flush to disk, rename over the target.</summary>
public static class OnnxModelWriter
{
    /// <summary>Saves <paramref name="model"/> to <paramref name="path"/>; a crash never leaves a half-written file there.</summary>
    public static void Save(ModelProto model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        AtomicFile.Write(path, stream => model.WriteTo(stream));
    }

    /// <summary>Serialises a model to bytes (for in-memory sessions).</summary>
    public static byte[] ToBytes(ModelProto model) => model.ToByteArray();
}

/// <summary>Atomic file replacement: write to a temp file beside the target, fsync, then rename.</summary>
public static class AtomicFile
{
    /// <summary>Writes the file through <paramref name="write"/> and publishes it with a rename.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(write);
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
            DurableDirectory.Sync(dir);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Writes all bytes atomically.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        Write(path, s => s.Write(copy));
    }

    /// <summary>Writes text (UTF-8) atomically.</summary>
    public static void WriteAllText(string path, string text) =>
        WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(text));
}
