namespace OnnxTune.Hosting.PostgreSql;

/// <summary>Where the files of shared model versions live.</summary>
public enum VersionFileStorage
{
    /// <summary>In the database (<c>bytea</c> rows, one per file): nothing else to set up; for models up to <see cref="PostgreSqlFineTuningOptions.MaxBlobBytes"/>.</summary>
    Database,

    /// <summary>In a folder every instance mounts (<see cref="PostgreSqlFineTuningOptions.SharedFolderPath"/>: NFS, SMB, a shared volume).</summary>
    SharedFolder,
}

/// <summary>
/// Several app instances on one PostgreSQL database (section <c>PostgreSql</c>, or <c>PostgreSql:&lt;name&gt;</c>
/// for a named model): feedback, version metadata and the serving pointer in the database, one trainer at a time.
/// Each instance keeps its own <c>ModelStorePath</c> (a local replica of the versions and round scratch space).
/// </summary>
public sealed class PostgreSqlFineTuningOptions
{
    /// <summary>The default configuration section.</summary>
    public const string DefaultSectionName = "PostgreSql";

    /// <summary>Gets or sets the Npgsql connection string (required).</summary>
    public string ConnectionString { get; set; } = "";

    /// <summary>Gets or sets the database schema of the model's tables (created when missing).</summary>
    /// <value>The default is <see langword="null"/>: <c>onnxtune</c> for the default model, <c>onnxtune_&lt;name&gt;</c> for a named one.</value>
    public string? Schema { get; set; }

    /// <summary>Gets or sets how long the trainer lease lasts without renewal: the longest a dead trainer blocks training.</summary>
    /// <value>The default is 30 seconds; it is renewed every third of it.</value>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Gets or sets how often an instance checks the shared pointer when no notification arrives (LISTEN/NOTIFY is the fast path).</summary>
    /// <value>The default is 5 seconds.</value>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Gets or sets where version files are kept.</summary>
    /// <value>The default is <see cref="VersionFileStorage.Database"/>.</value>
    public VersionFileStorage VersionFiles { get; set; } = VersionFileStorage.Database;

    /// <summary>Gets or sets the shared folder (required with <see cref="VersionFileStorage.SharedFolder"/>).</summary>
    public string? SharedFolderPath { get; set; }

    /// <summary>Gets or sets the largest version (all its files) stored in the database.</summary>
    /// <value>The default is 256 MiB; at most 1 GiB (the <c>bytea</c> limit).</value>
    public long MaxBlobBytes { get; set; } = 256L << 20;

    /// <summary>Gets or sets the configuration path the options were bound from (for error messages); set by the builder.</summary>
    public string ConfigurationPath { get; set; } = DefaultSectionName;
}
