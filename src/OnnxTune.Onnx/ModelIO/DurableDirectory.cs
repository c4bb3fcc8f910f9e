using System.Runtime.InteropServices;

namespace OnnxTune.Onnx.ModelIO;

/// <summary>
/// Makes renames durable: after a rename the directory entry itself must reach the disk, or a power loss can undo
/// it (the file's data is on disk, the name is not). On Unix this opens the directory and calls <c>fsync</c>; on
/// Windows (NTFS journals metadata) it does nothing.
/// </summary>
public static class DurableDirectory
{
    /// <summary>Flushes the directory entries of <paramref name="directory"/> to disk.</summary>
    /// <exception cref="IOException">The directory cannot be opened or flushed.</exception>
    public static void Sync(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (OperatingSystem.IsWindows()) return;
        var fd = Open(directory, 0 /* O_RDONLY */);
        if (fd < 0) throw new IOException($"Cannot open directory '{directory}' to flush it (errno {Marshal.GetLastPInvokeError()}).");
        try
        {
            if (Fsync(fd) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                // EINVAL: the file system does not support fsync on directories (some network/FUSE mounts): nothing to do.
                if (errno != 22) throw new IOException($"fsync of directory '{directory}' failed (errno {errno}).");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>Renames a directory and flushes the parent folder(s) of both names.</summary>
    public static void Move(string source, string destination)
    {
        Directory.Move(source, destination);
        SyncParents(source, destination);
    }

    /// <summary>Renames a file (replacing the destination when <paramref name="overwrite"/>) and flushes the parent folder(s).</summary>
    public static void MoveFile(string source, string destination, bool overwrite)
    {
        File.Move(source, destination, overwrite);
        SyncParents(source, destination);
    }

    private static void SyncParents(string source, string destination)
    {
        var a = Path.GetDirectoryName(Path.GetFullPath(source))!;
        var b = Path.GetDirectoryName(Path.GetFullPath(destination))!;
        Sync(b);
        if (!string.Equals(a, b, StringComparison.Ordinal)) Sync(a);
    }

    private static int Open(string path, int flags)
    {
        var bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(path) + 1];
        System.Text.Encoding.UTF8.GetBytes(path, bytes);
        return NativeOpen(bytes, flags);
    }

#pragma warning disable SYSLIB1054, CA5392 // a plain DllImport: the generated LibraryImport stubs need unsafe code in this project
    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int NativeOpen(byte[] path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    private static extern int Close(int fd);
#pragma warning restore SYSLIB1054, CA5392
}
