using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Labels;
using OnnxTune.Text.Layers;
using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;
using OnnxTune.Training;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.Loops;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.Trained;

namespace OnnxTune.Samples;

/// <summary>Settings of the shipped intent model: all-MiniLM-L6-v2 with a classification head.</summary>
internal sealed record EncoderIntentSettings
{
    /// <summary>Encoder layers trained besides the head (the top ones).</summary>
    public int TrainableLayers { get; init; } = 2;

    /// <summary>Tokens per utterance at most.</summary>
    public int MaxLength { get; init; } = 64;

    /// <summary>Offline training: epochs, batch size, head learning rate and the encoder layers' factor on it.</summary>
    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-3;
    public double EncoderLearningRateScale { get; init; } = 0.2;

    /// <summary>Examples per intent written to the replay set that ships with the model.</summary>
    public int ReplayPerClass { get; init; } = 30;

    public int Seed { get; init; } = 1;
}

/// <summary>
/// What an app team does once, offline, before shipping: build training artifacts from MiniLM plus a head
/// (the library calls behind <c>onnxtune artifacts --head classification --trainable-layers 2</c>), train them on the
/// intents known at launch (as <c>onnxtune train --out</c> does), and keep the trained folder with its replay set.
/// Hosting then serves and keeps fine-tuning that folder (<c>TrainedModelPath</c>). Results are cached by a hash of
/// the settings and data, so reruns skip the work.
/// </summary>
internal static class EncoderIntentModel
{
    /// <summary>Builds (or reuses) <c>artifacts/</c> and <c>trained/</c> under <paramref name="root"/>.</summary>
    public static (string ArtifactsPath, string TrainedPath, bool Reused) Prepare(
        string root, IReadOnlyList<string> labels, IReadOnlyList<Utterance> training, EncoderIntentSettings settings, Action<string>? log = null)
    {
        var key = Hash(labels, training, settings);
        var artifacts = Path.Combine(root, "artifacts");
        var trained = Path.Combine(root, "trained");
        var stamp = Path.Combine(root, "model.key");
        if (File.Exists(stamp) && File.ReadAllText(stamp) == key && Directory.Exists(trained)) return (artifacts, trained, true);
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        Directory.CreateDirectory(root);

        var sw = Stopwatch.StartNew();
        BuildArtifacts(artifacts, labels, settings);
        log?.Invoke($"artifacts built in {sw.Elapsed.TotalSeconds:F1} s");
        sw.Restart();
        Train(artifacts, trained, labels, training, settings, log);
        log?.Invoke($"trained offline in {sw.Elapsed.TotalSeconds:F1} s");
        File.WriteAllText(stamp, key);
        return (artifacts, trained, false);
    }

    /// <summary>MiniLM + mean pooling + dropout + Linear(384 → labels); the head and the top encoder layers trainable.</summary>
    public static void BuildArtifacts(string directory, IReadOnlyList<string> labels, EncoderIntentSettings settings)
    {
        var files = MiniLmModel.Extract();
        var head = TaskHeadBuilder.Build(OnnxModelReader.Load(files.ModelPath), new TaskHeadOptions { Outputs = labels.Count, Seed = settings.Seed });
        var trainable = EncoderLayerMap.Create(head.Model).Select(settings.TrainableLayers, [], []);
        var text = new TextModelSettings
        {
            Kind = TaskHeadKind.SequenceClassification,
            Outputs = labels.Count,
            Pooling = head.Options.Pooling,
            Dropout = head.Options.Dropout,
            OutputName = head.OutputName,
            LabelsFile = "labels.json",
            VocabularyFile = "vocab.txt",
            MaxLength = settings.MaxLength,
            LowerCase = true,
            TrainableLayers = settings.TrainableLayers,
        };
        var built = TaskHeadArtifacts.Build(head.Model, new ArtifactOptions
        {
            Selection = new ParameterSelection { TrainableNames = trainable },
            Loss = head.Loss,
            Optimizer = new OptimizerSpec { LearningRate = settings.LearningRate },
            Properties = text.ToProperties(),
        });
        ArtifactGenerator.Save(built, directory);
        new LabelMap(labels).Save(Path.Combine(directory, "labels.json"));
        File.Copy(files.VocabularyPath, Path.Combine(directory, "vocab.txt"), overwrite: true);
    }

    /// <summary>Trains the artifacts on <paramref name="training"/> and writes the trained folder with its replay set.</summary>
    public static void Train(string artifacts, string trained, IReadOnlyList<string> labels, IReadOnlyList<Utterance> training, EncoderIntentSettings settings, Action<string>? log)
    {
        var index = labels.Select((l, i) => (l, i)).ToDictionary(p => p.l, p => p.i, StringComparer.Ordinal);
        var encoder = BertTextEncoder.FromVocabulary(Path.Combine(artifacts, "vocab.txt"), new BertTextEncoderOptions { MaxLength = settings.MaxLength });
        var encoded = encoder.EncodeAll(training.Select(u => u.Text).ToList(), training.Select(u => index[u.Intent]).ToList());
        var manifest = ArtifactManifest.Load(artifacts);
        var scales = manifest.TrainableParameters.Select(p => p.Name).Where(n => !n.StartsWith(TaskHeadBuilder.Prefix, StringComparison.Ordinal))
            .ToDictionary(n => n, _ => settings.EncoderLearningRateScale, StringComparer.Ordinal);
        using var session = TrainingEngine.Open(artifacts, new TrainingEngineOptions { IntraOpThreads = 2, Seed = settings.Seed, LearningRateScales = scales });
        var batches = TrainingBatches.FromEpochs(encoded.Count, (encoded.Count + settings.BatchSize - 1) / settings.BatchSize,
            epoch => encoded.Batches(settings.BatchSize, settings.Seed + epoch).Select(b => ToTrainingBatch(manifest, b)));
        var steps = (long)settings.Epochs * batches.BatchesPerEpoch;
        TrainingLoop.Run(session, batches, new TrainingLoopOptions
        {
            Epochs = settings.Epochs,
            // Linear decay to 0 after a short warm-up, the usual BERT fine-tuning schedule.
            Schedule = LearningRateSchedules.LinearWithWarmup(settings.LearningRate, Math.Max(1, steps / 10), steps),
            StopAfterEpoch = e =>
            {
                log?.Invoke($"epoch {e.Epoch}/{settings.Epochs}: mean loss {e.MeanBatchLoss:F4} ({e.Elapsed.TotalSeconds:F0} s)");
                return false;
            },
        });
        session.LearningRate = settings.LearningRate;
        TrainedModelFolder.Save(session, trained);
        TrainedModelFolder.WriteTextReplaySet(Path.Combine(trained, TrainedModelFolder.ReplaySetFileName),
            training.Select(u => (u.Text, u.Intent)), settings.ReplayPerClass, settings.Seed);
    }

    private static TrainingBatch ToTrainingBatch(ArtifactManifest manifest, TextBatch text)
    {
        var batch = new TrainingBatch();
        foreach (var input in manifest.Inputs)
            batch.Add(input.Name, input.Name switch
            {
                BertInputNames.InputIds => text.InputIds,
                BertInputNames.AttentionMask => text.AttentionMask,
                _ => text.TokenTypeIds,
            }, text.Shape);
        return batch.WithLabels(text.Labels!, text.LabelShape);
    }

    private static string Hash(IReadOnlyList<string> labels, IReadOnlyList<Utterance> training, EncoderIntentSettings settings)
    {
        // Bump when the artifacts the library builds change (v2: sample weights and distillation inputs).
        var text = new StringBuilder("v2\u0001").AppendJoin('\n', labels).Append('\u0001').Append(settings).Append('\u0001');
        foreach (var u in training) text.Append(u.Text).Append('\t').Append(u.Intent).Append('\n');
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }
}
