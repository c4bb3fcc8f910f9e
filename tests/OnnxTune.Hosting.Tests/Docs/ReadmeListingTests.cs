using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace OnnxTune.Hosting.Tests.Docs;

/// <summary>Every <c>```csharp</c> listing in the READMEs compiles as shown (its own using lines, top-level statements) against the libraries.</summary>
public sealed partial class ReadmeListingTests
{
    public static TheoryData<string, int> Listings()
    {
        var data = new TheoryData<string, int>();
        foreach (var file in ReadmeFiles())
            for (var i = 0; i < Blocks(File.ReadAllText(file)).Count; i++)
                data.Add(Path.GetRelativePath(RepoRoot(), file), i);
        return data;
    }

    [Theory]
    [MemberData(nameof(Listings))]
    public void Listing_compiles(string readme, int index)
    {
        var code = Blocks(File.ReadAllText(Path.Combine(RepoRoot(), readme)))[index];
        var options = new CSharpParseOptions(LanguageVersion.Preview);
        var tree = CSharpSyntaxTree.ParseText(code, options, path: $"{readme}#{index}");
        // The SDK's implicit usings of a console app, as `dotnet new console` has them.
        var implicitUsings = CSharpSyntaxTree.ParseText(
            "global using System; global using System.Collections.Generic; global using System.IO; global using System.Linq; global using System.Net.Http; global using System.Threading; global using System.Threading.Tasks;", options);
        var compilation = CSharpCompilation.Create("Listing" + index, [tree, implicitUsings], References.Value,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        Assert.True(errors.Count == 0, $"{readme} listing {index + 1} does not compile:\n{string.Join("\n", errors)}\n---\n{code}");
    }

    [Fact]
    public void The_main_readme_has_listings()
    {
        Assert.True(Blocks(File.ReadAllText(Path.Combine(RepoRoot(), "README.md"))).Count >= 2);
    }

    private static readonly Lazy<List<MetadataReference>> References = new(() =>
    {
        var paths = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Concat(Directory.GetFiles(AppContext.BaseDirectory, "*.dll"))
            .GroupBy(Path.GetFileName, StringComparer.OrdinalIgnoreCase).Select(g => g.First());
        var list = new List<MetadataReference>();
        foreach (var p in paths)
        {
            try { list.Add(MetadataReference.CreateFromFile(p)); }
            catch (BadImageFormatException) { } // native libraries in the output folder
        }
        return list;
    });

    private static IEnumerable<string> ReadmeFiles()
    {
        var root = RepoRoot();
        yield return Path.Combine(root, "README.md");
        foreach (var f in Directory.GetFiles(Path.Combine(root, "src"), "README.md", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            if (!f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
                yield return f;
    }

    private static List<string> Blocks(string markdown) => [.. CSharpBlock().Matches(markdown).Select(m => m.Groups[1].Value)];

    [GeneratedRegex(@"^```csharp\r?\n(.*?)^```", RegexOptions.Multiline | RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "OnnxTune.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("OnnxTune.sln not found above the test folder.");
    }
}
