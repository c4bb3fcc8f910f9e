using Microsoft.Data.Sqlite;

namespace OnnxTune.Hosting;

/// <summary>What went wrong in the feedback store.</summary>
public enum FeedbackStoreErrorKind
{
    /// <summary>The database stayed locked (busy) past the timeout.</summary>
    Busy,

    /// <summary>The disk (or the database's page limit) is full.</summary>
    Full,

    /// <summary>The database or its folder cannot be written (read-only file system, permissions).</summary>
    ReadOnly,

    /// <summary>The file is not a feedback database, or is damaged.</summary>
    Corrupt,

    /// <summary>An I/O error (including a store folder or database file that vanished).</summary>
    IO,
}

/// <summary>A feedback store operation failed; no SQLite exception escapes the store without this wrapper.</summary>
public sealed class FeedbackStoreException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public FeedbackStoreException(FeedbackStoreErrorKind kind, string path, string operation, string message, Exception? inner = null)
        : base(message, inner)
    {
        Kind = kind;
        Path = path;
        Operation = operation;
    }

    /// <summary>Gets what went wrong.</summary>
    public FeedbackStoreErrorKind Kind { get; }

    /// <summary>Gets the database file.</summary>
    public string Path { get; }

    /// <summary>Gets the operation that failed (for example <c>append</c>).</summary>
    public string Operation { get; }
}

/// <summary>Maps SQLite and file-system errors to <see cref="FeedbackStoreException"/>.</summary>
internal static class FeedbackStoreErrors
{
    // SQLite primary result codes (https://sqlite.org/rescode.html).
    private const int SqliteBusy = 5, SqliteLocked = 6, SqliteNoMem = 7, SqliteReadOnly = 8, SqliteIoErr = 10, SqliteCorrupt = 11,
        SqliteFull = 13, SqliteCantOpen = 14, SqliteNotADb = 26, SqlitePerm = 3;

    public static FeedbackStoreException Wrap(Exception e, string path, string operation)
    {
        if (e is FeedbackStoreException f) return f;
        var kind = e switch
        {
            SqliteException s => (s.SqliteErrorCode & 0xFF) switch
            {
                SqliteBusy or SqliteLocked => FeedbackStoreErrorKind.Busy,
                SqliteFull => FeedbackStoreErrorKind.Full,
                SqliteReadOnly or SqlitePerm => FeedbackStoreErrorKind.ReadOnly,
                SqliteCorrupt or SqliteNotADb => FeedbackStoreErrorKind.Corrupt,
                SqliteNoMem or SqliteIoErr or SqliteCantOpen => FeedbackStoreErrorKind.IO,
                _ => FeedbackStoreErrorKind.IO,
            },
            UnauthorizedAccessException => FeedbackStoreErrorKind.ReadOnly,
            IOException io when IsReadOnlyFileSystem(io) => FeedbackStoreErrorKind.ReadOnly,
            IOException io when IsDiskFull(io) => FeedbackStoreErrorKind.Full,
            _ => FeedbackStoreErrorKind.IO,
        };
        return new FeedbackStoreException(kind, path, operation,
            $"Feedback store '{path}': {operation} failed ({kind}): {e.Message}", e);
    }

    /// <summary>True for the exceptions <see cref="Wrap"/> turns into a typed store error.</summary>
    public static bool IsStoreError(Exception e) => e is SqliteException or IOException or UnauthorizedAccessException;

    // EROFS = 30, ENOSPC = 28 on Linux; HResult carries errno for Unix IOExceptions raised by the runtime.
    private static bool IsReadOnlyFileSystem(IOException e) => (e.HResult & 0xFFFF) == 30 || e.Message.Contains("Read-only file system", StringComparison.OrdinalIgnoreCase);

    private static bool IsDiskFull(IOException e) => (e.HResult & 0xFFFF) == 28 || (e.HResult & 0xFFFF) == 0x70 || e.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);
}
