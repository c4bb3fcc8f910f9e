using System.CommandLine;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Cli.Commands;

/// <summary><c>onnxtune export</c>: the inference model with the weights of a checkpoint.</summary>
internal static class ExportCommand
{
    public static Command Create(CliContext context)
    {
        var source = new Argument<string>("artifacts-or-checkpoint-dir") { Description = "An artifacts folder, a checkpoint folder, or a 'train --out' folder." };
        var output = new Option<string>("--out") { Description = "Path of the exported ONNX model.", Required = true, HelpName = "model.onnx" };
        var command = new Command("export", "Write the inference model with trained weights (loads in a plain InferenceSession).") { source, output };
        command.SetAction(r => OnnxTuneCli.Guard(context, () => Run(context, r.GetValue(source)!, r.GetValue(output)!)));
        return command;
    }

    public static int Run(CliContext context, string sourceDir, string outPath)
    {
        var (artifacts, checkpoint) = Resolve(context.FullPath(sourceDir));
        var target = context.FullPath(outPath);
        using var session = TrainingEngine.Open(artifacts, new TrainingEngineOptions { CheckpointDirectory = checkpoint });
        session.ExportInferenceModel(target);
        context.Out.WriteLine($"exported {target} (artifacts {artifacts}, checkpoint {checkpoint ?? Path.Combine(artifacts, session.Manifest.Files.Checkpoint)}, step {session.Step})");
        return 0;
    }

    /// <summary>Finds the artifacts folder and checkpoint for a directory given to <c>export</c>.</summary>
    internal static (string Artifacts, string? Checkpoint) Resolve(string dir)
    {
        if (File.Exists(Path.Combine(dir, ArtifactFiles.ManifestFileName)))
            return (dir, null);
        var checkpoint = CheckpointStore.Exists(dir) ? dir
            : CheckpointStore.Exists(Path.Combine(dir, "checkpoint")) ? Path.Combine(dir, "checkpoint")
            : throw new OnnxTuneException($"'{dir}' is neither an artifacts folder ({ArtifactFiles.ManifestFileName}) nor a checkpoint folder ({CheckpointStore.MetadataFileName}, or checkpoint/{CheckpointStore.MetadataFileName}).");
        var parent = Path.GetDirectoryName(checkpoint);
        if (parent is not null && File.Exists(Path.Combine(parent, ArtifactFiles.ManifestFileName)))
            return (parent, checkpoint);
        var (meta, _) = CheckpointStore.Load(checkpoint);
        if (meta.UserProperties.TryGetValue(ArtifactsCommand.ArtifactsProperty, out var recorded)
            && File.Exists(Path.Combine(recorded, ArtifactFiles.ManifestFileName)))
            return (recorded, checkpoint);
        throw new OnnxTuneException(
            $"Checkpoint '{checkpoint}' does not say where its artifacts are: property '{ArtifactsCommand.ArtifactsProperty}' is " +
            (recorded is null ? "missing" : $"'{recorded}', which holds no {ArtifactFiles.ManifestFileName}") + ". Put the checkpoint inside its artifacts folder.");
    }
}
