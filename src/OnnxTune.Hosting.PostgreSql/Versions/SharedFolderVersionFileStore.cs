using OnnxTune.Hosting.PostgreSql.Internal;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Hosting.PostgreSql;

/// <summary>
/// Version files in a folder every instance mounts: <c>&lt;root&gt;/vNNNNNN-&lt;uid&gt;/</c>, each written into a
/// temp folder, flushed and renamed into place, so a reader sees a version completely or not at all.
/// </summary>
public sealed class SharedFolderVersionFileStore : IVersionFileStore
{
    /// <summary>Creates the store over <paramref name="root"/> (created when missing).</summary>
    public SharedFolderVersionFileStore(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Root = Path.GetFullPath(root);
        Directory.CreateDirectory(Root);
    }

    /// <summary>Gets the shared folder.</summary>
    public string Root { get; }

    /// <inheritdoc/>
    public async Task UploadAsync(int version, string uid, string sourceFolder, CancellationToken cancellationToken = default)
    {
        var final = Folder(version, uid);
        if (Directory.Exists(final)) return;
        var temp = Path.Combine(Root, $".tmp-{Path.GetFileName(final)}-{Guid.NewGuid():N}");
        try
        {
            foreach (var relative in VersionFiles.List(sourceFolder))
                await VersionFiles.WriteDurableAsync(VersionFiles.Resolve(temp, relative),
                    await File.ReadAllBytesAsync(VersionFiles.Resolve(sourceFolder, relative), cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);
            Directory.CreateDirectory(temp);
            foreach (var dir in Directory.EnumerateDirectories(temp, "*", SearchOption.AllDirectories)) DurableDirectory.Sync(dir);
            DurableDirectory.Sync(temp);
            DurableDirectory.Move(temp, final);
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); }
            catch (IOException) { }
            throw;
        }
    }

    /// <inheritdoc/>
    public async Task DownloadAsync(int version, string uid, string destinationFolder, CancellationToken cancellationToken = default)
    {
        var source = Folder(version, uid);
        if (!Directory.Exists(source))
            throw new OnnxTuneException($"Shared version {version} ({uid}) has no folder '{source}'.");
        foreach (var relative in VersionFiles.List(source))
            await VersionFiles.WriteDurableAsync(VersionFiles.Resolve(destinationFolder, relative),
                await File.ReadAllBytesAsync(VersionFiles.Resolve(source, relative), cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public Task DeleteAsync(int version, string uid, CancellationToken cancellationToken = default)
    {
        var folder = Folder(version, uid);
        if (!Directory.Exists(folder)) return Task.CompletedTask;
        var trash = Path.Combine(Root, $".trash-{Path.GetFileName(folder)}-{Guid.NewGuid():N}");
        DurableDirectory.Move(folder, trash);
        Directory.Delete(trash, recursive: true);
        return Task.CompletedTask;
    }

    private string Folder(int version, string uid) =>
        Path.Combine(Root, $"{ModelVersionStore.FolderName(version)}-{uid}");
}
