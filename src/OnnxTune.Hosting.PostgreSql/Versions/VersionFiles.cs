namespace OnnxTune.Hosting.PostgreSql.Internal;

/// <summary>The files of a local version folder that travel between instances (not the replica's own markers).</summary>
internal static class VersionFiles
{
    private static readonly HashSet<string> LocalMarkers = new(StringComparer.Ordinal)
    {
        ModelVersionStore.PromotedMarkerFileName, ModelVersionStore.RetiredMarkerFileName, ModelVersionStore.SharedIdFileName,
    };

    /// <summary>Relative paths ('/'-separated) of the files to share, sorted.</summary>
    public static IReadOnlyList<string> List(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f).Replace(Path.DirectorySeparatorChar, '/'))
            .Where(r => !LocalMarkers.Contains(r))
            .Order(StringComparer.Ordinal)
            .ToArray();

    /// <summary>Resolves a shared relative path inside <paramref name="folder"/>, refusing one that escapes it.</summary>
    public static string Resolve(string folder, string relative)
    {
        var full = Path.GetFullPath(Path.Combine(folder, relative.Replace('/', Path.DirectorySeparatorChar)));
        var root = Path.GetFullPath(folder) + Path.DirectorySeparatorChar;
        if (!full.StartsWith(root, StringComparison.Ordinal))
            throw new OnnxTuneException($"Shared version file '{relative}' lies outside its version folder.");
        return full;
    }

    public static async Task WriteDurableAsync(string path, ReadOnlyMemory<byte> content, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        await using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
        await fs.WriteAsync(content, ct).ConfigureAwait(false);
        fs.Flush(flushToDisk: true);
    }
}
