using System.CommandLine;
using System.Globalization;
using OnnxTune.Migration.Import;

namespace OnnxTune.Cli.Commands;

/// <summary><c>onnxtune import-ort</c>: an onnxruntime-training artifacts folder into OnnxTune artifacts and checkpoint.</summary>
internal static class ImportOrtCommand
{
    public static Command Create(CliContext context)
    {
        var source = new Argument<string>("ort-artifacts-dir") { Description = "A folder written by onnxruntime-training's generate_artifacts (and its training API's checkpoints)." };
        var output = new Option<string>("--out") { Description = "OnnxTune artifacts folder to write (train and export read it).", Required = true, HelpName = "dir" };
        var eval = new Option<string>("--eval-model") { Description = "Eval model, relative to the ORT folder.", DefaultValueFactory = _ => "eval_model.onnx", HelpName = "file" };
        var optimizer = new Option<string>("--optimizer-model") { Description = "Optimizer model, relative to the ORT folder.", DefaultValueFactory = _ => "optimizer_model.onnx", HelpName = "file" };
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint: the flatbuffer file or the .pbseq directory, relative to the ORT folder.", DefaultValueFactory = _ => "checkpoint", HelpName = "path" };
        var command = new Command("import-ort", "Import an onnxruntime-training artifacts folder (eval model, optimizer model, checkpoint in either ORT format) as OnnxTune artifacts with the same weights, optimizer state, step, learning rate and properties.")
        {
            source, output, eval, optimizer, checkpoint,
        };
        command.SetAction(r => OnnxTuneCli.Guard(context, () => Run(context, r.GetValue(source)!, r.GetValue(output)!,
            new OrtImportOptions { EvalModel = r.GetValue(eval)!, OptimizerModel = r.GetValue(optimizer)!, Checkpoint = r.GetValue(checkpoint)! })));
        return command;
    }

    public static int Run(CliContext context, string sourceDir, string outDir, OrtImportOptions options)
    {
        var source = context.FullPath(sourceDir);
        var target = context.FullPath(outDir);
        var r = OrtArtifactImporter.Import(source, target, options);
        var w = context.Out;
        var m = r.Manifest;
        w.WriteLine($"imported {source} ({r.CheckpointFormat} checkpoint) into {target}");
        w.WriteLine($"  loss: {r.Loss}");
        w.WriteLine($"  optimizer: {r.Optimizer}");
        w.WriteLine($"  parameters: {m.TrainableParameters.Count} trainable, {m.FrozenParameters.Count} frozen; inputs: {string.Join(", ", r.DataInputs)}");
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  step {r.Step}, learning rate {r.LearningRate:G6}, {r.Properties.Count} propert{(r.Properties.Count == 1 ? "y" : "ies")}{(r.Properties.Count == 0 ? "" : ": " + string.Join(", ", r.Properties.Keys))}"));
        return 0;
    }
}
