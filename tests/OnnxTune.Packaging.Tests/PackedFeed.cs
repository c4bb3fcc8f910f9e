using System.Diagnostics;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Xml.Linq;

namespace OnnxTune.Packaging.Tests;

/// <summary>
/// Packs every packable project under <c>src/</c> (already built by this test project's references: NoBuild) into a
/// local folder, with a version no cache has seen (<c>0.0.0-test.&lt;timestamp&gt;</c>). Everything lives in one
/// temp folder outside the repository, deleted afterwards.
/// </summary>
public sealed class PackedFeed : IDisposable
{
    public PackedFeed()
    {
        Root = Path.Combine(Path.GetTempPath(), "onnxtune-packaging-" + Guid.NewGuid().ToString("N")[..12]);
        Feed = Directory.CreateDirectory(Path.Combine(Root, "feed")).FullName;
        Version = $"0.0.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";

        var traversal = Path.Combine(Root, "pack.proj");
        File.WriteAllText(traversal, $"""
            <Project>
              <ItemGroup>
                <PackProject Include="{RepositoryRoot}/src/*/*.csproj" />
              </ItemGroup>
              <Target Name="PackAll">
                <MSBuild Projects="@(PackProject)" Targets="Pack" BuildInParallel="true"
                         Properties="Configuration={Configuration};NoBuild=true;_IsPacking=true;PackageVersion={Version};PackageOutputPath={Feed}/" />
              </Target>
            </Project>
            """);
        var sw = Stopwatch.StartNew();
        PackOutput = Dotnet.Run(Root, TimeSpan.FromMinutes(4), "msbuild", traversal, "-t:PackAll", "-nologo", "-v:m", "-m:2", "-nodeReuse:false");
        PackSeconds = sw.Elapsed.TotalSeconds;
        Packages = Directory.GetFiles(Feed, "*.nupkg").ToDictionary(
            p => Path.GetFileName(p)[..^(Version.Length + ".nupkg".Length + 1)], p => p, StringComparer.OrdinalIgnoreCase);
    }

    public static string RepositoryRoot { get; } = Metadata("OnnxTune.RepositoryRoot");

    public static string Configuration { get; } = Metadata("OnnxTune.Configuration");

    public string Root { get; }

    public string Feed { get; }

    public string Version { get; }

    public string PackOutput { get; }

    public double PackSeconds { get; }

    /// <summary>Package file by package id.</summary>
    public IReadOnlyDictionary<string, string> Packages { get; }

    /// <summary>The src projects that produce a package (all but those that say IsPackable false).</summary>
    public static IReadOnlyList<string> PackableProjects() =>
        Directory.GetFiles(Path.Combine(RepositoryRoot, "src"), "*.csproj", SearchOption.AllDirectories)
            .Where(p => !File.ReadAllText(p).Contains("<IsPackable>false</IsPackable>", StringComparison.OrdinalIgnoreCase))
            .Select(p => Path.GetFileNameWithoutExtension(p)!)
            .Order(StringComparer.Ordinal)
            .ToList();

    public static XDocument Nuspec(string nupkg)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        using var s = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal) && !e.FullName.Contains('/', StringComparison.Ordinal)).Open();
        return XDocument.Load(s);
    }

    public static List<string> Entries(string nupkg)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        return zip.Entries.Select(e => e.FullName).ToList();
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static string Metadata(string key) =>
        typeof(PackedFeed).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;
}

/// <summary>Runs the dotnet CLI as a user would, without the MSBuild variables of the test host's own build.</summary>
internal static class Dotnet
{
    public static string Run(string workingDirectory, TimeSpan timeout, params string[] args) => Run(workingDirectory, timeout, out _, true, args);

    public static string Run(string workingDirectory, TimeSpan timeout, out int exitCode, bool requireSuccess, params string[] args)
    {
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h && File.Exists(h) ? h : "dotnet";
        return Exec(host, workingDirectory, timeout, out exitCode, requireSuccess, args);
    }

    public static string Exec(string fileName, string workingDirectory, TimeSpan timeout, out int exitCode, bool requireSuccess, params string[] args)
    {
        var info = new ProcessStartInfo(fileName)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) info.ArgumentList.Add(a);
        foreach (var key in info.Environment.Keys.ToList())
            if (key.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || key.StartsWith("_MSBUILD", StringComparison.OrdinalIgnoreCase) || key.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase))
                info.Environment.Remove(key);
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["DOTNET_NOLOGO"] = "1";
        info.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";

        var output = new StringBuilder();
        using var p = new Process { StartInfo = info };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            throw new TimeoutException($"{fileName} {string.Join(' ', args)} did not finish within {timeout.TotalSeconds:F0} s:\n{output}");
        }
        p.WaitForExit(); // drains the redirected streams
        exitCode = p.ExitCode;
        var text = output.ToString();
        if (requireSuccess && exitCode != 0)
            throw new InvalidOperationException($"{fileName} {string.Join(' ', args)} exited with {exitCode}:\n{text}");
        return text;
    }
}
