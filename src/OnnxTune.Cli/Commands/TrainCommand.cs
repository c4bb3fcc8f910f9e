using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Cli.Text;
using OnnxTune.Training;
using OnnxTune.Training.Data;
using OnnxTune.Training.Trained;

namespace OnnxTune.Cli.Commands;

/// <summary>Settings of one <c>onnxtune train</c> run.</summary>
internal sealed record TrainSettings(string Artifacts, string Data, string Out, int Epochs = 1, int BatchSize = 1, double? LearningRate = null, int? Seed = null, bool Shuffle = true, int ReplayPerClass = TrainCommand.DefaultReplayPerClass);

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
        var command = new Command("train", "Train over an artifacts folder; writes the exported model and a checkpoint.")
        {
            artifacts, data, output, epochs, batch, lr, seed, noShuffle, replay,
        };
        command.SetAction(r => OnnxTuneCli.Guard(context, () =>
        {
            Run(context, new TrainSettings(r.GetValue(artifacts)!, r.GetValue(data)!, r.GetValue(output)!,
                r.GetValue(epochs), r.GetValue(batch), r.GetValue(lr), r.GetValue(seed), !r.GetValue(noShuffle), r.GetValue(replay)));
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
        var artifactsDir = context.FullPath(s.Artifacts);
        var outDir = context.FullPath(s.Out);
        var manifest = ArtifactManifest.Load(artifactsDir);
        var dataPath = context.FullPath(s.Data);
        var seed = s.Seed ?? 0;
        int sampleCount, batchesPerEpoch;
        Func<int, IEnumerable<TrainingBatch>> epochBatches;
        string order;
        if (TextDataFile.IsTextData(dataPath))
        {
            var text = TextTask.Load(artifactsDir, manifest, dataPath);
            sampleCount = text.Count;
            batchesPerEpoch = text.BatchCount(s.BatchSize);
            // Length batching: similar lengths share a batch; with shuffling each epoch mixes ties and batch order anew.
            epochBatches = epoch => text.Batches(s.BatchSize, s.Shuffle ? seed + epoch - 1 : null).Select(b => b.Batch);
            order = s.Shuffle ? $"length-bucketed text, shuffled (seed {seed})" : "length-bucketed text, shortest first";
        }
        else
        {
            var data = TensorDataFile.Open(dataPath, manifest);
            var sampler = new BatchSampler(data.SampleCount, s.BatchSize, s.Shuffle, seed);
            sampleCount = data.SampleCount;
            batchesPerEpoch = sampler.BatchesPerEpoch;
            epochBatches = _ => sampler.NextEpoch().Select(indices => data.CreateBatch(indices));
            order = s.Shuffle ? $"shuffled (seed {seed})" : "in order";
        }
        using var session = TrainingEngine.Open(artifactsDir, new TrainingEngineOptions { Seed = seed });
        if (s.LearningRate is { } lr) session.LearningRate = lr;

        var w = context.Out;
        w.WriteLine($"training {sampleCount} samples, {batchesPerEpoch} batches of up to {s.BatchSize} per epoch, {s.Epochs} epoch(s), {order}, lr {session.LearningRate.ToString("G6", CultureInfo.InvariantCulture)}");
        var epochLosses = new List<double>();
        var stepLosses = new List<float>();
        var clock = new Stopwatch();
        for (var epoch = 1; epoch <= s.Epochs; epoch++)
        {
            var progress = new TextProgress(w, context.ShowProgress, $"epoch {epoch}/{s.Epochs}", batchesPerEpoch);
            double sum = 0;
            var b = 0;
            foreach (var batch in epochBatches(epoch))
            {
                clock.Start();
                var loss = session.TrainStep(batch);
                if (!float.IsFinite(loss))
                {
                    clock.Stop();
                    throw new TrainingDivergedException(
                        $"The loss is {loss} at epoch {epoch}, batch {b + 1} (optimizer step {session.Step + 1}); nothing was written. Lower --lr or check the data and labels.");
                }
                session.OptimizerStep();
                clock.Stop();
                stepLosses.Add(loss);
                sum += loss;
                b++;
                progress.Report(b, $"loss {loss:F4}");
            }
            progress.Clear();
            var mean = sum / b;
            epochLosses.Add(mean);
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"epoch {epoch}/{s.Epochs}: mean batch loss {mean:F6} ({b} steps)"));
        }

        var checkpoint = Path.Combine(outDir, TrainedModelFolder.CheckpointFolderName);
        var model = Path.Combine(outDir, TrainedModelFolder.ModelFileName);
        TrainedModelFolder.Save(session, outDir, new Dictionary<string, string> { [ArtifactsCommand.ArtifactsProperty] = artifactsDir });
        var replayPath = Path.Combine(outDir, TrainedModelFolder.ReplaySetFileName);
        if (TextDataFile.IsTextData(dataPath) && s.ReplayPerClass > 0)
        {
            var labelled = TextDataFile.Read(dataPath).Where(e => e.Label is not null).Select(e => (e.Text, e.Label!));
            var written = TrainedModelFolder.WriteTextReplaySet(replayPath, labelled, s.ReplayPerClass, seed);
            w.WriteLine($"replay set: {written} examples (up to {s.ReplayPerClass} per label) in {replayPath}");
        }
        else if (File.Exists(replayPath))
            File.Delete(replayPath); // a stale set from an earlier run would not match this model's data
        var perStep = clock.Elapsed.TotalMilliseconds / Math.Max(1, stepLosses.Count);
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{stepLosses.Count} steps in {clock.Elapsed.TotalSeconds:F2} s ({perStep:F2} ms/step); wrote {model} and {checkpoint}"));
        w.WriteLine($"serve it as the hosted base: AddOnDeviceFineTuning(o => {{ o.ArtifactsPath = \"{artifactsDir}\"; o.TrainedModelPath = \"{outDir}\"; ... }})");
        return new TrainResult(epochLosses, stepLosses, session.Step, clock.Elapsed, model, checkpoint);
    }
}
