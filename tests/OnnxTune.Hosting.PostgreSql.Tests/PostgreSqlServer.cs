using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace OnnxTune.Hosting.PostgreSql.Tests;

/// <summary>
/// A private PostgreSQL server for the test run: Debian's binaries (<c>/usr/lib/postgresql/&lt;major&gt;/bin</c>;
/// installed with <c>apt-get install -y postgresql</c> when missing and the tests run as root), <c>initdb</c> into a
/// temp folder, started on a random port with its Unix socket in that folder (no TCP listener), as the
/// <c>postgres</c> OS user when running as root (the server refuses root). Stopped and deleted at the end.
/// </summary>
public sealed class PostgreSqlServer : IDisposable
{
    private static readonly Lazy<(string? Bin, string? Missing)> Binaries = new(Locate);
    private readonly string _dir;
    private readonly string _bin;

    public PostgreSqlServer()
    {
        var (bin, _) = Binaries.Value;
        _bin = bin ?? "";
        _dir = "";
        ConnectionString = "";
        // Missing binaries: every test skips itself (SkipIfUnavailable) with the reason.
        if (bin is null) return;
        _dir = Path.Combine(Path.GetTempPath(), "onnxtune-pg-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_dir);
        var asRoot = Environment.UserName == "root";
        if (asRoot) Run("chown", "postgres", _dir);
        Port = FreePort();
        RunServerTool("initdb", "-D", DataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8");
        RunServerTool("pg_ctl", "-D", DataDir, "-l", Path.Combine(_dir, "server.log"), "-w", "-t", "60", "-o",
            $"-p {Port.ToString(CultureInfo.InvariantCulture)} -k {_dir} -c listen_addresses='' -c max_connections=200", "start");
        ConnectionString = new NpgsqlConnectionStringBuilder { Host = _dir, Port = Port, Username = "postgres", Database = "postgres", Pooling = true }.ConnectionString;
    }

    /// <summary>Why the server cannot run here, or null when it can (the PostgreSQL facts skip with this reason).</summary>
    public static string? SkipReason => Binaries.Value.Missing;

    public int Port { get; }

    public string ConnectionString { get; }

    private string DataDir => Path.Combine(_dir, "data");

    /// <summary>Creates an empty database and returns its connection string.</summary>
    public string CreateDatabase()
    {
        var name = "t_" + Guid.NewGuid().ToString("N")[..16];
        using (var c = new NpgsqlConnection(ConnectionString))
        {
            c.Open();
            using var cmd = new NpgsqlCommand($"CREATE DATABASE {name};", c);
            cmd.ExecuteNonQuery();
        }
        return new NpgsqlConnectionStringBuilder(ConnectionString) { Database = name }.ConnectionString;
    }

    /// <summary>Skips the calling test (SkippableFact) when the server cannot run here.</summary>
    public static void SkipIfUnavailable() => Skip.If(SkipReason is not null, SkipReason);

    public void Dispose()
    {
        if (_dir.Length == 0) return;
        NpgsqlConnection.ClearAllPools();
        try { RunServerTool("pg_ctl", "-D", DataDir, "-m", "immediate", "-w", "stop"); }
        catch (InvalidOperationException) { }
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private void RunServerTool(string tool, params string[] args)
    {
        var exe = Path.Combine(_bin, tool);
        if (Environment.UserName == "root") Run("runuser", ["-u", "postgres", "--", exe, .. args]);
        else Run(exe, args);
    }

    private static string Run(string exe, params string[] args)
    {
        var info = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = "/" };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(180_000)) { p.Kill(true); throw new InvalidOperationException($"{exe} timed out"); }
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{exe} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Result}{stdout.Result}");
        return stdout.Result;
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static (string?, string?) Locate()
    {
        if (!OperatingSystem.IsLinux()) return (null, "the PostgreSQL tests run on Linux only (Debian's postgresql package)");
        string? Find() => Directory.Exists("/usr/lib/postgresql")
            ? Directory.EnumerateDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin"))
                .Where(b => File.Exists(Path.Combine(b, "initdb")) && File.Exists(Path.Combine(b, "pg_ctl")))
                .OrderByDescending(b => b, StringComparer.Ordinal).FirstOrDefault()
            : null;
        if (Find() is { } bin) return (bin, null);
        if (Environment.UserName != "root")
            return (null, "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb) and the tests do not run as root: install it with 'apt-get install -y postgresql'");
        try
        {
            Run("apt-get", "update", "-qq");
            Run("apt-get", "install", "-y", "-qq", "postgresql");
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return (null, $"PostgreSQL is not installed and 'apt-get install -y postgresql' failed: {e.Message}");
        }
        return Find() is { } installed ? (installed, null) : (null, "PostgreSQL is still missing after 'apt-get install -y postgresql'");
    }
}

[CollectionDefinition(Name)]
public sealed class PostgreSqlCollection : ICollectionFixture<PostgreSqlServer>
{
    public const string Name = "PostgreSQL server";
}
