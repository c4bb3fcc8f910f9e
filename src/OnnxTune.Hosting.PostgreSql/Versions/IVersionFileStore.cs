namespace OnnxTune.Hosting.PostgreSql;

/// <summary>
/// Where the files of shared model versions live (the database holds their metadata and the serving pointer).
/// Every instance downloads a version into its local replica before serving it. A version is addressed by its
/// number and a unique id (a number can be reused by a version that was written but never promoted).
/// </summary>
public interface IVersionFileStore
{
    /// <summary>Stores the files of <paramref name="sourceFolder"/> (recursively) durably; they need not be visible until this returns.</summary>
    Task UploadAsync(int version, string uid, string sourceFolder, CancellationToken cancellationToken = default);

    /// <summary>Writes the files of a version into the empty folder <paramref name="destinationFolder"/>.</summary>
    /// <exception cref="OnnxTuneException">The version's files are missing.</exception>
    Task DownloadAsync(int version, string uid, string destinationFolder, CancellationToken cancellationToken = default);

    /// <summary>Deletes a version's files (no-op when there are none).</summary>
    Task DeleteAsync(int version, string uid, CancellationToken cancellationToken = default);
}
