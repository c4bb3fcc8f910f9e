using System.CommandLine;
using System.Globalization;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Cli.Text;
using OnnxTune.Training;
using OnnxTune.Training.Data;
using OnnxTune.Training.Loops;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.Trained;

namespace OnnxTune.Cli.Commands;

/// <summary>Settings of one <c>onnxtune train</c> run.</summary>
internal sealed record TrainSettings(string Artifacts, string Data, string Out, int Epochs = 1, int BatchSize = 1, double? LearningRate = null, int? Seed = null, bool Shuffle = true, int ReplayPerClass = TrainCommand.DefaultReplayPerClass, string Schedule = "constant", double WarmupRatio = 0, IReadOnlyList<string>? LearningRateScales = null);

/// <summary>Outcome of a training run (what the command prints, for tests and callers).</summary>
internal sealed record TrainResult(IReadOnlyList<double> EpochMeanLosses, IReadOnlyList<float> StepLosses, long Steps, TimeSpan TrainingTime, string ModelPath, string CheckpointPath);

/// <summary><c>onnxtune train</c>: one optimizer step per batch over a safetensors data file.</summary>
internal static class TrainCommand
{
    /// <summary>Default of <c>--replay-per-class</c>.</summary>
    public const int DefaultReplayPerClass = 50;

    public static Command Create(CliContext context)
    {
        var artifacts = new Argument<string>("artifacts-dir") { Description = "Artifacts folder written by 'onnxtune artifacts'." };
        var data = new Option<string>("--data") { Description = "Safetensors file (one tensor per model input plus the labels, batched on dim 0), or for artifacts built with --head a CSV / JSON Lines file with 'text' and 'label' fields.", Required = true, HelpName = "file" };
        var output = new Option<string>("--out") { Description = "Folder for model.onnx (exported inference model) and checkpoint/.", Required = true, HelpName = "dir" };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the data.", DefaultValueFactory = _ => 1, HelpName = "n" };
        var batch = new Option<int>("--batch-size") { Description = "Samples per optimizer step (PyTorch DataLoader default).", DefaultValueFactory = _ => 1, HelpName = "n" };
        var lr = new Option<double?>("--lr") { Description = "Learning rate (default: the one in the artifacts' checkpoint).", HelpName = "x" };
        var seed = new Option<int?>("--seed") { Description = "Seed of the shuffling and of random ops such as Dropout (default 0).", HelpName = "n" };
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "Take batches in file order, keeping the last partial batch (DataLoader shuffle=False)." };
        var replay = new Option<int>("--replay-per-class") { Description = $"Text data: examples per label written to replay.jsonl, the replay set hosting rehearses against forgetting (0: none).", DefaultValueFactory = _ => DefaultReplayPerClass, HelpName = "n" };
        var schedule = new Option<string>("--schedule") { Description = "Learning rate over the run, as Hugging Face transformers' schedules: constant, linear (warm-up, then linear decay to 0 at the last step) or cosine.", DefaultValueFactory = _ => "constant", HelpName = "kind" };
        var warmup = new Option<double>("--warmup-ratio") { Description = "Fraction of the run's steps spent warming the learning rate up linearly from 0 (0 to 1).", DefaultValueFactory = _ => 0, HelpName = "x" };
        var lrScale = new Option<string[]>("--lr-scale") { Description = "Scale the learning rate of the trainable tensors a glob matches, as glob=factor (repeatable; the longest matching glob wins), e.g. --lr-scale 'head.*=5' for PyTorch-style parameter groups.", HelpName = "glob=factor", AllowMultipleArgumentsPerToken = false };
        var command = new Command("train", "Train over an artifacts folder; writes the exported model and a checkpoint.")
        {
            artifacts, data, output, epochs, batch, lr, seed, noShuffle, replay, schedule, warmup, lrScale,
        };
        command.SetAction(r => OnnxTuneCli.Guard(context, () =>
        {
            Run(context, new TrainSettings(r.GetValue(artifacts)!, r.GetValue(data)!, r.GetValue(output)!,
                r.GetValue(epochs), r.GetValue(batch), r.GetValue(lr), r.GetValue(seed), !r.GetValue(noShuffle), r.GetValue(replay), r.GetValue(schedule)!, r.GetValue(warmup), r.GetValue(lrScale)));
            return 0;
        }));
        return command;
    }

    public static TrainResult Run(CliContext context, TrainSettings s)
    {
        if (s.Epochs < 1) throw new CliArgumentException($"--epochs must be at least 1 (got {s.Epochs}).");
        if (s.ReplayPerClass < 0) throw new CliArgumentException($"--replay-per-class must be 0 or more (got {s.ReplayPerClass}).");
        if (s.BatchSize < 1) throw new CliArgumentException($"--batch-size must be at least 1 (got {s.BatchSize}).");
        if (s.LearningRate is { } l && !(double.IsFinite(l) && l >= 0)) throw new CliArgumentException($"--lr must be a finite value >= 0 (got {l}).");
        if (!(s.WarmupRatio is >= 0 and <= 1)) throw new CliArgumentException($"--warmup-ratio must be between 0 and 1 (got {s.WarmupRatio}).");
        if (!Schedules.ContainsKey(s.Schedule)) throw new CliArgumentException($"--schedule must be {string.Join(", ", Schedules.Keys)} (got '{s.Schedule}').");
        var scales = ParseLearningRateScales(s.LearningRateScales);
        var artifactsDir = context.FullPath(s.Artifacts);
        var outDir = context.FullPath(s.Out);
        var manifest = ArtifactManifest.Load(artifactsDir);
        var dataPath = context.FullPath(s.Data);
        var seed = s.Seed ?? 0;
        ITrainingBatches batches;
        string order;
        if (TextDataFile.IsTextData(dataPath))
        {
            var text = TextTask.Load(artifactsDir, manifest, dataPath);
            // Length batching: similar lengths share a batch; with shuffling each epoch mixes ties and batch order anew.
            batches = TrainingBatches.FromEpochs(text.Count, text.BatchCount(s.BatchSize),
                epoch => text.Batches(s.BatchSize, s.Shuffle ? seed + epoch - 1 : null).Select(b => b.Batch));
            order = s.Shuffle ? $"length-bucketed text, shuffled (seed {seed})" : "length-bucketed text, shortest first";
        }
        else
        {
            var data = TensorDataFile.Open(dataPath, manifest);
            batches = s.Shuffle
                ? IndexedBatches.Shuffled(data.SampleCount, s.BatchSize, seed, i => data.CreateBatch(i))
                : IndexedBatches.InOrder(data.SampleCount, s.BatchSize, i => data.CreateBatch(i));
            order = s.Shuffle ? $"shuffled (seed {seed})" : "in order";
        }
        using var engine = TrainingEngine.Open(artifactsDir, new TrainingEngineOptions { Seed = seed, LearningRateScales = scales });
        if (s.LearningRate is { } lr) engine.LearningRate = lr;
        var totalSteps = (long)batches.BatchesPerEpoch * s.Epochs;
        var warmupSteps = (long)Math.Ceiling(s.WarmupRatio * totalSteps);
        var peak = engine.LearningRate;
        var lrSchedule = Schedules[s.Schedule](peak, warmupSteps, totalSteps);
        if (lrSchedule is not null && engine.Schedule is { } stored)
            throw new CliArgumentException($"--schedule {s.Schedule} / --warmup-ratio: the checkpoint in '{artifactsDir}' already carries a '{stored.State.Kind}' learning-rate schedule, which train follows; leave both options out.");

        var w = context.Out;
        w.WriteLine($"training {batches.ExamplesPerEpoch} samples, {batches.BatchesPerEpoch} batches of up to {s.BatchSize} per epoch, {s.Epochs} epoch(s), {order}, lr {engine.LearningRate.ToString("G6", CultureInfo.InvariantCulture)}{(lrSchedule is null ? "" : $" ({s.Schedule} schedule, {warmupSteps} warm-up steps)")}");
        TextProgress? bar = null;
        var progress = new InlineProgress<TrainingStepProgress>(p =>
        {
            if (p.Batch == 1) bar = new TextProgress(w, context.ShowProgress, $"epoch {p.Epoch}/{p.Epochs}", p.BatchesPerEpoch);
            bar!.Report(p.Batch, string.Create(CultureInfo.InvariantCulture, $"loss {p.Loss:F4}, ETA {Duration(p.Remaining)}"));
            if (p.Batch == p.BatchesPerEpoch) bar.Clear();
        });
        TrainingLoopResult result;
        try
        {
            result = TrainingLoop.Run(engine, batches, new TrainingLoopOptions
            {
                Epochs = s.Epochs,
                Schedule = lrSchedule,
                Progress = progress,
                RecordStepLosses = true,
                StopAfterEpoch = e =>
                {
                    var left = TimeSpan.FromTicks(e.Elapsed.Ticks * (s.Epochs - e.Epoch));
                    w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"epoch {e.Epoch}/{s.Epochs}: mean batch loss {e.MeanBatchLoss:F6} ({e.Steps} steps, {e.Elapsed.TotalSeconds:F1} s{(e.Epoch < s.Epochs ? $", ETA {Duration(left)}" : "")})"));
                    return false;
                },
            });
        }
        catch (TrainingDivergedException e)
        {
            bar?.Clear();
            throw new TrainingDivergedException(e.Message + " Nothing was written; lower --lr.", e.Epoch, e.Batch, e.Loss);
        }
        // The schedule leaves its last value (0 for a decay); the checkpoint keeps the peak for later rounds.
        engine.LearningRate = peak;
        var epochLosses = result.Epochs.Select(e => e.MeanBatchLoss).ToList();
        var stepLosses = result.StepLosses;

        var checkpoint = Path.Combine(outDir, TrainedModelFolder.CheckpointFolderName);
        var model = Path.Combine(outDir, TrainedModelFolder.ModelFileName);
        TrainedModelFolder.Save(engine, outDir, new Dictionary<string, string> { [ArtifactsCommand.ArtifactsProperty] = artifactsDir });
        var replayPath = Path.Combine(outDir, TrainedModelFolder.ReplaySetFileName);
        if (TextDataFile.IsTextData(dataPath) && s.ReplayPerClass > 0)
        {
            var labelled = TextDataFile.Read(dataPath).Where(e => e.Label is not null).Select(e => (e.Text, e.Label!));
            var written = TrainedModelFolder.WriteTextReplaySet(replayPath, labelled, s.ReplayPerClass, seed);
            w.WriteLine($"replay set: {written} examples (up to {s.ReplayPerClass} per label) in {replayPath}");
        }
        else if (File.Exists(replayPath))
            File.Delete(replayPath); // a stale set from an earlier run would not match this model's data
        var perStep = result.Elapsed.TotalMilliseconds / Math.Max(1, stepLosses.Count);
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{stepLosses.Count} steps in {result.Elapsed.TotalSeconds:F2} s ({perStep:F2} ms/step); wrote {model} and {checkpoint}"));
        w.WriteLine($"serve it as the hosted base: AddOnDeviceFineTuning(o => {{ o.ArtifactsPath = \"{artifactsDir}\"; o.TrainedModelPath = \"{outDir}\"; ... }})");
        return new TrainResult(epochLosses, stepLosses, engine.Step, result.Elapsed, model, checkpoint);
    }

    /// <summary>The <c>--schedule</c> kinds (Hugging Face transformers' names); null: the learning rate stays as it is.</summary>
    private static readonly IReadOnlyDictionary<string, Func<double, long, long, ILearningRateSchedule?>> Schedules =
        new Dictionary<string, Func<double, long, long, ILearningRateSchedule?>>(StringComparer.Ordinal)
        {
            ["constant"] = (peak, warmup, _) => warmup > 0 ? LearningRateSchedules.ConstantWithWarmup(peak, warmup) : null,
            ["linear"] = LearningRateSchedules.LinearWithWarmup,
            ["cosine"] = (peak, warmup, total) => LearningRateSchedules.CosineWithWarmup(peak, warmup, total),
        };

    /// <summary>Parses <c>--lr-scale glob=factor</c> values; the engine checks that every glob matches a trainable tensor.</summary>
    internal static IReadOnlyDictionary<string, double>? ParseLearningRateScales(IReadOnlyList<string>? values)
    {
        if (values is null || values.Count == 0) return null;
        var scales = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var value in values)
        {
            var eq = value.LastIndexOf('=');
            if (eq <= 0 || !double.TryParse(value.AsSpan(eq + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var factor))
                throw new CliArgumentException($"--lr-scale '{value}': expected glob=factor, e.g. 'head.*=5'.");
            if (!double.IsFinite(factor) || factor < 0)
                throw new CliArgumentException($"--lr-scale '{value}': the factor must be finite and >= 0.");
            if (!scales.TryAdd(value[..eq], factor))
                throw new CliArgumentException($"--lr-scale '{value}': the glob '{value[..eq]}' is given twice.");
        }
        return scales;
    }

    private static string Duration(TimeSpan t) => t.TotalHours >= 1 ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : t.ToString(@"m\:ss", CultureInfo.InvariantCulture);

    /// <summary>Reports on the calling thread (<see cref="Progress{T}"/> would post to the thread pool).</summary>
    private sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
