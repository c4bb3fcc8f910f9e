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
        var output = new Option<string>("--out") { Description = "Path of the exported ONNX model (LoRA artifacts: with its adapter branches).", HelpName = "model.onnx" };
        var merged = new Option<string>("--merged") { Description = "Path of the model with LoRA adapters folded into their weights (W + scale·B·A): a plain model of the source graph.", HelpName = "model.onnx" };
        var adapter = new Option<string>("--adapter") { Description = "Path of an ONNX Runtime adapter file with the trained tensors (OrtLoraAdapter, RunOptions.AddActiveLoraAdapter); needs --adapter-base.", HelpName = "file.onnx_adapter" };
        var adapterBase = new Option<string>("--adapter-base") { Description = "Path of the adapter-ready base model: trained tensors as inputs with untuned defaults (zero lora_B).", HelpName = "base.onnx" };
        var command = new Command("export", "Write the inference model with trained weights (loads in a plain InferenceSession), merged LoRA weights, or an ONNX Runtime adapter and its base.")
        {
            source, output, merged, adapter, adapterBase,
        };
        command.SetAction(r => OnnxTuneCli.Guard(context, () => Run(context, r.GetValue(source)!, r.GetValue(output), r.GetValue(merged), r.GetValue(adapter), r.GetValue(adapterBase))));
        return command;
    }

    public static int Run(CliContext context, string sourceDir, string? outPath, string? mergedPath = null, string? adapterPath = null, string? adapterBasePath = null)
    {
        if (outPath is null && mergedPath is null && adapterPath is null && adapterBasePath is null)
            throw new CliArgumentException("Give what to export: --out <model.onnx>, --merged <model.onnx>, or --adapter <file.onnx_adapter> --adapter-base <base.onnx>.");
        if ((adapterPath is null) != (adapterBasePath is null))
            throw new CliArgumentException(adapterPath is null ? "--adapter-base needs --adapter <file.onnx_adapter>." : "--adapter needs --adapter-base <base.onnx>: the adapter fits only the base model it is exported with.");
        var (artifacts, checkpoint) = Resolve(context.FullPath(sourceDir));
        using var session = TrainingEngine.Open(artifacts, new TrainingEngineOptions { CheckpointDirectory = checkpoint });
        var from = $"artifacts {artifacts}, checkpoint {checkpoint ?? Path.Combine(artifacts, session.Manifest.Files.Checkpoint)}, step {session.Step}";
        if (outPath is not null)
        {
            var target = context.FullPath(outPath);
            session.ExportInferenceModel(target);
            context.Out.WriteLine($"exported {target} ({from})");
        }
        if (mergedPath is not null)
        {
            var target = context.FullPath(mergedPath);
            session.ExportMergedModel(target);
            var lora = session.Manifest.Lora;
            context.Out.WriteLine($"exported {target}, {(lora is null ? "no LoRA adapters to merge" : $"{lora.Weights.Count} LoRA adapter(s) merged")} ({from})");
        }
        if (adapterPath is not null)
        {
            var target = context.FullPath(adapterPath);
            var baseTarget = context.FullPath(adapterBasePath!);
            session.ExportAdapter(target, baseTarget);
            context.Out.WriteLine($"exported adapter {target} ({new FileInfo(target).Length:N0} bytes, {session.ParameterNames.Count + session.NonTrainableStateNames.Count} tensors) and its base {baseTarget} ({from})");
        }
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
