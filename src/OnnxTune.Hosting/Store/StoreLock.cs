using System.Diagnostics;
using System.Globalization;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Hosting;

/// <summary>
/// Another process (or another store object in this process) holds the store: one store folder and one feedback
/// database serve exactly one process at a time.
/// </summary>
public sealed class StoreLockedException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public StoreLockedException(string lockPath, int? holderProcessId, string? holderHost, DateTimeOffset? holderStartedAt, Exception? inner)
        : base($"The store lock '{lockPath}' is held by {Describe(holderProcessId, holderHost, holderStartedAt)}; " +
               "one model store (folder and feedback database) can be used by one process at a time.", inner)
    {
        LockPath = lockPath;
        HolderProcessId = holderProcessId;
        HolderHost = holderHost;
        HolderStartedAt = holderStartedAt;
    }

    /// <summary>Gets the lock file.</summary>
    public string LockPath { get; }

    /// <summary>Gets the holder's process id, when it recorded one.</summary>
    public int? HolderProcessId { get; }

    /// <summary>Gets the holder's host name, when it recorded one.</summary>
    public string? HolderHost { get; }

    /// <summary>Gets when the holder took the lock, when it recorded it.</summary>
    public DateTimeOffset? HolderStartedAt { get; }

    private static string Describe(int? pid, string? host, DateTimeOffset? at) =>
        pid is null ? "another process (it recorded no holder details)"
        : $"process {pid.Value.ToString(CultureInfo.InvariantCulture)} on host '{host}' since {at?.ToString("O", CultureInfo.InvariantCulture) ?? "?"}";
}

/// <summary>
/// An exclusive lock file held open (<see cref="FileShare.None"/>: <c>flock(LOCK_EX)</c> on Unix, a share-mode lock
/// on Windows) for the owner's lifetime; the kernel drops it when the process dies, even by SIGKILL. The holder's
/// pid, host and start time go to a side file (<c>&lt;lock&gt;.holder</c>), since the locked file itself cannot be
/// read by the process that is refused.
/// </summary>
internal sealed class StoreLock : IDisposable
{
    private readonly FileStream _stream;

    private StoreLock(string path, FileStream stream)
    {
        Path = path;
        _stream = stream;
    }

    public string Path { get; }

    /// <exception cref="StoreLockedException">Another holder has the lock.</exception>
    /// <exception cref="FeedbackStoreException">The folder cannot be written (read-only, vanished).</exception>
    public static StoreLock Acquire(string lockPath)
    {
        var full = System.IO.Path.GetFullPath(lockPath);
        var holderPath = full + ".holder";
        FileStream stream;
        try
        {
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
            stream = new FileStream(full, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e) when (e is not FileNotFoundException and not DirectoryNotFoundException && !IsReadOnly(e))
        {
            var (pid, host, at) = ReadHolder(holderPath);
            throw new StoreLockedException(full, pid, host, at, e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw FeedbackStoreErrors.Wrap(e, full, "lock");
        }
        try
        {
            var started = Process.GetCurrentProcess().StartTime.ToUniversalTime();
            AtomicFile.WriteAllText(holderPath, string.Join('\n',
                Environment.ProcessId.ToString(CultureInfo.InvariantCulture),
                Environment.MachineName,
                new DateTimeOffset(started).ToString("O", CultureInfo.InvariantCulture)));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stream.Dispose();
            throw FeedbackStoreErrors.Wrap(e, holderPath, "lock");
        }
        return new StoreLock(full, stream);
    }

    public void Dispose() => _stream.Dispose();

    private static bool IsReadOnly(IOException e) => FeedbackStoreErrors.Wrap(e, "", "").Kind is FeedbackStoreErrorKind.ReadOnly or FeedbackStoreErrorKind.Full;

    private static (int?, string?, DateTimeOffset?) ReadHolder(string holderPath)
    {
        try
        {
            var lines = File.ReadAllLines(holderPath);
            int? pid = lines.Length > 0 && int.TryParse(lines[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out var p) ? p : null;
            DateTimeOffset? at = lines.Length > 2 && DateTimeOffset.TryParse(lines[2], CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var t) ? t : null;
            return (pid, lines.Length > 1 ? lines[1] : null, at);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return (null, null, null);
        }
    }
}
