using System.CommandLine;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Cli.Commands;

namespace OnnxTune.Cli;

/// <summary>The <c>onnxtune</c> command tree and its error handling.</summary>
internal static class OnnxTuneCli
{
    /// <summary>Exit code for a failed command (bad input, I/O error, ONNX Runtime failure).</summary>
    public const int Failure = 1;

    /// <summary>Parses <paramref name="args"/> and runs the verb; returns the process exit code.</summary>
    public static int Run(IReadOnlyList<string> args, CliContext context)
    {
        var root = new RootCommand("onnxtune: build training artifacts, check gradients, train, export and inspect ONNX models on stock ONNX Runtime.")
        {
            ArtifactsCommand.Create(context),
            CheckCommand.Create(context),
            TrainCommand.Create(context),
            ExportCommand.Create(context),
            InspectCommand.Create(context),
            EvalCommand.Create(context),
            MiniLmCommand.Create(context),
            ImportOrtCommand.Create(context),
        };
        var config = new InvocationConfiguration { Output = context.Out, Error = context.Error };
        return root.Parse(args).Invoke(config);
    }

    /// <summary>Runs a verb body, turning OnnxTune, ONNX Runtime and I/O errors into a message and an exit code.</summary>
    public static int Guard(CliContext context, Func<int> body, Func<Exception, int>? exitCodeFor = null)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is OnnxTuneException or OnnxRuntimeException or IOException or UnauthorizedAccessException)
        {
            var prefix = e switch
            {
                OnnxRuntimeException => "error: ONNX Runtime: ",
                IOException or UnauthorizedAccessException => "error: I/O: ",
                _ => "error: ",
            };
            context.Error.WriteLine(prefix + e.Message);
            return exitCodeFor?.Invoke(e) ?? Failure;
        }
    }
}
