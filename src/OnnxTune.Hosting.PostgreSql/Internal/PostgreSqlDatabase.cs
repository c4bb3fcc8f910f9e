using System.Net.Sockets;
using Npgsql;

namespace OnnxTune.Hosting.PostgreSql.Internal;

/// <summary>
/// One model's schema on a PostgreSQL server: the data source (search path set to the schema) and the tables of
/// the feedback store, the version registry and the trainer lease, created on first use under an advisory lock
/// (concurrent <c>CREATE ... IF NOT EXISTS</c> from several instances can otherwise fail).
/// </summary>
internal sealed class PostgreSqlDatabase : IDisposable
{
    /// <summary>The NOTIFY channel of pointer changes; the payload is the schema name.</summary>
    public const string VersionsChannel = "onnxtune_versions";

    private const string Tables = """
        CREATE TABLE IF NOT EXISTS feedback (
            seq bigint PRIMARY KEY,
            id text NOT NULL UNIQUE,
            created_at bigint NOT NULL,
            user_id text NULL,
            text text NULL,
            tensors text NULL,
            label_index bigint NOT NULL,
            label_name text NULL,
            weight double precision NOT NULL,
            metadata text NULL,
            held_out boolean NOT NULL);
        CREATE INDEX IF NOT EXISTS ix_feedback_user ON feedback(user_id);
        CREATE INDEX IF NOT EXISTS ix_feedback_created ON feedback(created_at);
        CREATE TABLE IF NOT EXISTS feedback_sequence (id int PRIMARY KEY CHECK (id = 1), last bigint NOT NULL);
        INSERT INTO feedback_sequence (id, last) VALUES (1, 0) ON CONFLICT DO NOTHING;
        CREATE TABLE IF NOT EXISTS state (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE IF NOT EXISTS quarantine (
            seq bigint PRIMARY KEY,
            id text NOT NULL,
            created_at bigint NOT NULL,
            user_id text NULL,
            text text NULL,
            tensors text NULL,
            label_index bigint NOT NULL,
            label_name text NULL,
            weight double precision NOT NULL,
            metadata text NULL,
            held_out boolean NOT NULL,
            quarantined_at bigint NOT NULL,
            reason text NOT NULL);
        CREATE INDEX IF NOT EXISTS ix_quarantine_user ON quarantine(user_id);
        ALTER TABLE feedback ADD COLUMN IF NOT EXISTS partition_key text NULL;
        ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS partition_key text NULL;
        CREATE INDEX IF NOT EXISTS ix_feedback_partition ON feedback(partition_key, seq);
        CREATE TABLE IF NOT EXISTS round_ledger (
            seq bigint PRIMARY KEY REFERENCES feedback(seq) ON DELETE CASCADE,
            state int NOT NULL,
            attempts int NOT NULL);
        CREATE TABLE IF NOT EXISTS versions (
            version int PRIMARY KEY,
            uid text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            holder text NOT NULL,
            token bigint NOT NULL,
            bytes bigint NOT NULL,
            retired_reason text NULL);
        CREATE TABLE IF NOT EXISTS version_files (
            version int NOT NULL,
            uid text NOT NULL,
            path text NOT NULL,
            content bytea NOT NULL,
            PRIMARY KEY (version, uid, path));
        CREATE TABLE IF NOT EXISTS promotions (
            version int PRIMARY KEY,
            holder text NOT NULL,
            token bigint NOT NULL,
            promoted_at timestamptz NOT NULL DEFAULT clock_timestamp());
        CREATE TABLE IF NOT EXISTS serving (
            id int PRIMARY KEY CHECK (id = 1),
            version int NOT NULL,
            changed_at timestamptz NOT NULL,
            changed_by text NOT NULL);
        CREATE TABLE IF NOT EXISTS trainer_lease (
            id int PRIMARY KEY CHECK (id = 1),
            holder text NOT NULL,
            token bigint NOT NULL,
            expires_at timestamptz NOT NULL);
        """;

    public PostgreSqlDatabase(string connectionString, string schema)
    {
        Schema = schema;
        var csb = new NpgsqlConnectionStringBuilder(connectionString) { SearchPath = schema };
        Description = $"postgresql://{csb.Host}:{csb.Port}/{csb.Database} schema {schema}";
        DataSource = new NpgsqlDataSourceBuilder(csb.ConnectionString).Build();
        // LISTEN needs a connection of its own that stays open (no pooling surprises, keepalive to notice a dead server).
        ListenConnectionString = new NpgsqlConnectionStringBuilder(csb.ConnectionString) { Pooling = false, KeepAlive = 5 }.ConnectionString;
    }

    public string Schema { get; }

    /// <summary>Names the server, database and schema (never the credentials) in messages.</summary>
    public string Description { get; }

    public NpgsqlDataSource DataSource { get; }

    public string ListenConnectionString { get; }

    /// <summary>Creates the schema and tables when missing.</summary>
    public void EnsureCreated()
    {
        using var c = DataSource.OpenConnection();
        using var tx = c.BeginTransaction();
        using (var cmd = new NpgsqlCommand("SELECT pg_advisory_xact_lock(hashtext('onnxtune-schema:' || @s));", c, tx))
        {
            cmd.Parameters.AddWithValue("s", Schema);
            cmd.ExecuteNonQuery();
        }
        using (var cmd = new NpgsqlCommand($"CREATE SCHEMA IF NOT EXISTS \"{Schema}\";", c, tx)) cmd.ExecuteNonQuery();
        using (var cmd = new NpgsqlCommand($"SET LOCAL search_path = \"{Schema}\";\n{Tables}", c, tx)) cmd.ExecuteNonQuery();
        tx.Commit();
    }

    public void Dispose() => DataSource.Dispose();

    /// <summary>True for the exceptions <see cref="Wrap"/> turns into a typed store error.</summary>
    public static bool IsStoreError(Exception e) => e is NpgsqlException or IOException or SocketException or TimeoutException or UnauthorizedAccessException;

    /// <summary>Maps a database error to <see cref="FeedbackStoreException"/> (SQLSTATE classes: 53 resources, 25006 read-only, 40/55P03 busy, XX00x corrupt).</summary>
    public FeedbackStoreException Wrap(Exception e, string operation)
    {
        if (e is FeedbackStoreException f) return f;
        var kind = e switch
        {
            PostgresException p when p.SqlState is "53100" or "53200" or "54000" => FeedbackStoreErrorKind.Full,
            PostgresException p when p.SqlState is "25006" or "42501" => FeedbackStoreErrorKind.ReadOnly,
            PostgresException p when p.SqlState.StartsWith("40", StringComparison.Ordinal) || p.SqlState is "55P03" or "57014" or "53300" => FeedbackStoreErrorKind.Busy,
            PostgresException p when p.SqlState is "XX001" or "XX002" => FeedbackStoreErrorKind.Corrupt,
            NpgsqlException { InnerException: TimeoutException } or TimeoutException => FeedbackStoreErrorKind.Busy,
            _ => FeedbackStoreErrorKind.IO,
        };
        return new FeedbackStoreException(kind, Description, operation, $"Feedback store '{Description}': {operation} failed ({kind}): {e.Message}", e);
    }
}
