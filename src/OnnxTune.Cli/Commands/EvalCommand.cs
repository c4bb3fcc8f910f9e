using System.CommandLine;
using System.Globalization;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Cli.Text;
using OnnxTune.Text.Heads;
using OnnxTune.Training;

namespace OnnxTune.Cli.Commands;

/// <summary>Outcome of <c>onnxtune eval</c>.</summary>
/// <param name="Examples">Examples evaluated.</param>
/// <param name="Loss">Mean loss per example.</param>
/// <param name="Accuracy">Classification accuracy (null for regression).</param>
/// <param name="MacroF1">Macro-F1 (null for regression).</param>
internal sealed record EvalSummary(int Examples, double Loss, double? Accuracy, double? MacroF1);

/// <summary><c>onnxtune eval</c>: loss, accuracy and macro-F1 of a trained (or freshly built) text model on a labelled file.</summary>
internal static class EvalCommand
{
    public static Command Create(CliContext context)
    {
        var source = new Argument<string>("artifacts-or-out-dir") { Description = "An artifacts folder (its checkpoint), or the --out folder of 'onnxtune train'." };
        var data = new Option<string>("--data") { Description = "CSV or JSON Lines file with 'text' and 'label' fields.", Required = true, HelpName = "file" };
        var batch = new Option<int>("--batch-size") { Description = "Examples per forward run.", DefaultValueFactory = _ => 64, HelpName = "n" };
        var command = new Command("eval", "Evaluate on a labelled text file: mean loss, and for classification accuracy and macro-F1.") { source, data, batch };
        command.SetAction(r => OnnxTuneCli.Guard(context, () =>
        {
            Run(context, r.GetValue(source)!, r.GetValue(data)!, r.GetValue(batch));
            return 0;
        }));
        return command;
    }

    public static EvalSummary Run(CliContext context, string sourceDir, string dataFile, int batchSize)
    {
        if (batchSize < 1) throw new CliArgumentException($"--batch-size must be at least 1 (got {batchSize}).");
        var (artifacts, checkpoint) = ExportCommand.Resolve(context.FullPath(sourceDir));
        var manifest = ArtifactManifest.Load(artifacts);
        var dataPath = context.FullPath(dataFile);
        if (!TextDataFile.IsTextData(dataPath))
            throw new CliArgumentException($"eval reads CSV or JSON Lines text files (.csv, .jsonl, .json); got '{dataPath}'.");
        var task = TextTask.Load(artifacts, manifest, dataPath);
        using var session = TrainingEngine.Open(artifacts, new TrainingEngineOptions { CheckpointDirectory = checkpoint });
        var outputName = task.Settings.OutputName;
        var metrics = task.Settings.Kind == TaskHeadKind.Regression ? null : new ClassificationMetrics();
        double lossSum = 0;
        var n = 0;
        foreach (var (batch, text) in task.Batches(batchSize, seed: null))
        {
            var result = session.EvalStep(batch);
            if (!result.Outputs.TryGetValue(outputName, out var output))
                throw new OnnxTuneException($"The eval graph has no output '{outputName}' (outputs: {string.Join(", ", result.Outputs.Keys)}).");
            lossSum += result.Loss * (double)text.BatchSize;
            n += text.BatchSize;
            if (metrics is null) continue;
            var scores = output.AsFloats();
            var classes = (int)output.Shape[^1];
            for (var r = 0; r < text.BatchSize; r++)
                metrics.Add((int)text.Labels![r], ClassificationMetrics.ArgMax(scores.AsSpan(r * classes, classes)));
        }
        var summary = new EvalSummary(n, lossSum / n, metrics?.Accuracy, metrics?.MacroF1);
        var w = context.Out;
        w.WriteLine($"eval of {artifacts} (checkpoint {checkpoint ?? Path.Combine(artifacts, manifest.Files.Checkpoint)}, step {session.Step}) on {dataPath}");
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"examples {n}, loss {summary.Loss:F6}")
            + (metrics is null ? "" : string.Create(CultureInfo.InvariantCulture, $", accuracy {metrics.Accuracy:F4} ({metrics.Correct}/{metrics.Total}), macro-F1 {metrics.MacroF1:F4}")));
        return summary;
    }
}
