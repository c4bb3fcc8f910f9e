using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Tokenization;
using OnnxTune.Training;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.Caching;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Benchmarks.Encoder;

/// <summary>
/// The OnnxTune side of W4 with the library's defaults for a frozen encoder prefix: the model is split where the
/// frozen layers 0–3 meet the trainable ones (<see cref="FrozenPrefixSplitter"/>), suffix artifacts are built
/// (<see cref="TaskHeadArtifacts"/>: head dropout on while training), every example runs through the frozen prefix
/// once (<see cref="ActivationCache"/>, examples padded to the hosting length bucket) and <see cref="CachedTrainer"/>
/// trains layers 4–5 and the head on the cached activations, in the shared batch plan.
/// </summary>
internal static class W4OnnxTune
{
    public static W4Result Run(string work, ThreadSpinning? spinning = null)
    {
        var s = W4Settings.Load(work);
        var data = SafeTensorsFile.Read(Path.Combine(work, W4Settings.DataFileName));
        var train = Ragged(data, "train");
        var trainLabels = data.Get("train_labels").ToInt64Array();
        var test = Ragged(data, "test");
        var testLabels = data.Get("test_labels").ToInt64Array();
        var padId = (int)data.Get("pad_token_id").ToInt64Array()[0];
        var plan = Plan(data);
        var modelPath = Path.Combine(work, s.Model);
        var model = OnnxModelReader.Load(modelPath);
        Peak.Reset();

        var wall = Stopwatch.StartNew();
        var split = FrozenPrefixSplitter.Split(model, s.Trainable.ToList());
        var suffixDir = Path.Combine(work, "onnxtune", "suffix-artifacts");
        var built = TaskHeadArtifacts.Build(split.Suffix, new ArtifactOptions
        {
            Selection = new ParameterSelection { TrainableNames = s.Trainable.ToList() },
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits", LabelName = "labels", IgnoreIndex = TaskHeadBuilder.IgnoreIndex },
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = s.LearningRate, WeightDecay = s.WeightDecay },
        });
        ArtifactGenerator.Save(built, suffixDir);
        Console.Error.WriteLine($"[onnxtune] training graph: {built.Training.Graph.Node.Count} nodes, {built.Training.Graph.Node.Count(n => n.OpType == "LayerNormalization")} LayerNormalization, {built.Training.Graph.Node.Count(n => n.OpType == "Pow")} Pow");
        var setup = wall.Elapsed;
        var phases = new Dictionary<string, double> { ["split_and_artifacts"] = Peak.Megabytes() };

        var engineOptions = new TrainingEngineOptions { IntraOpThreads = s.Threads, InterOpThreads = 1, Seed = s.Seed };
        if (spinning is { } spin) engineOptions.Spinning = spin;
        var profile = Environment.GetEnvironmentVariable("ONNXTUNE_W4_PROFILE");
        if (Environment.GetEnvironmentVariable("ONNXTUNE_W4_MEMORY_PATTERN") == "1") engineOptions.MemoryPattern = true;
        if (!string.IsNullOrEmpty(profile))
            engineOptions.ConfigureSessionOptions = so =>
            {
                so.ProfileOutputPathPrefix = profile;
                so.EnableProfiling = true;
            };
        using var session = TrainingEngine.Open(suffixDir, engineOptions);
        session.LearningRate = s.LearningRate;
        using var cache = new ActivationCache(split, new ActivationCacheOptions { BatchSize = s.BatchSize, IntraOpThreads = s.Threads });
        var examples = new TrainingExample[train.Count];
        for (var i = 0; i < train.Count; i++)
        {
            var width = W4Data.Bucket(train[i].Length, s.LengthBucket);
            var ids = new long[width];
            var mask = new long[width];
            Array.Fill(ids, padId);
            for (var t = 0; t < train[i].Length; t++) { ids[t] = train[i][t]; mask[t] = 1; }
            examples[i] = new TrainingExample($"train-{i}",
            [
                SafeTensor.FromInt64s(BertInputNames.InputIds, ids, width),
                SafeTensor.FromInt64s(BertInputNames.AttentionMask, mask, width),
                SafeTensor.FromInt64s(BertInputNames.TokenTypeIds, new long[width], width),
            ], SafeTensor.FromInt64s("labels", [trainLabels[i]]));
        }
        phases["sessions"] = Peak.Megabytes();
        var build = cache.Build(examples);
        phases["prefix_cache"] = Peak.Megabytes();
        var trainer = new CachedTrainer(session, cache);
        var epochLosses = new List<double>();
        var epochSeconds = new List<double>();
        long steps = 0;
        var trainClock = Stopwatch.StartNew();
        foreach (var epoch in plan)
        {
            var r = trainer.TrainEpoch(epoch.Select(b => (IReadOnlyList<TrainingExample>)b.Select(i => examples[i]).ToList()).ToList());
            epochLosses.Add(r.MeanLoss);
            epochSeconds.Add(r.Elapsed.TotalSeconds);
            steps += r.OptimizerSteps;
            Console.Error.WriteLine($"[onnxtune] epoch {epochLosses.Count}/{plan.Count}: mean loss {r.MeanLoss:F4}, {r.Elapsed.TotalSeconds:F1} s");
        }
        var trainTime = trainClock.Elapsed;
        phases["train"] = Peak.Megabytes();
        var trainedPath = Path.Combine(work, "onnxtune", "model.onnx");
        session.ExportInferenceModel(trainedPath, modelPath);
        var elapsed = wall.Elapsed;
        var peak = Peak.Megabytes();

        var evalClock = Stopwatch.StartNew();
        var accuracy = Accuracy(trainedPath, test, testLabels, padId, s.Threads);
        return new W4Result
        {
            System = "OnnxTune",
            Version = typeof(TrainingEngine).Assembly.GetName().Version?.ToString() ?? "",
            TrainExamples = train.Count,
            Epochs = plan.Count,
            BatchSize = s.BatchSize,
            Steps = steps,
            WallSeconds = elapsed.TotalSeconds,
            ExamplesPerSecond = (double)train.Count * plan.Count / elapsed.TotalSeconds,
            PeakRssMb = peak,
            TestExamples = test.Count,
            TestAccuracy = accuracy,
            EpochLosses = epochLosses,
            EpochSeconds = epochSeconds,
            Parts = new Dictionary<string, double>
            {
                ["split_and_artifacts_s"] = setup.TotalSeconds,
                ["prefix_cache_s"] = build.Elapsed.TotalSeconds,
                ["train_s"] = trainTime.TotalSeconds,
                ["export_s"] = (elapsed - setup - build.Elapsed - trainTime).TotalSeconds,
            },
            EvalSeconds = evalClock.Elapsed.TotalSeconds,
            PeakRssAfterMb = phases,
            Threads = s.Threads,
            Notes = $"frozen-prefix cache ({build.Computed} examples through layers 0-3 once, {cache.Bytes / 1e6:F0} MB), length bucket {s.LengthBucket}",
        };
    }

    /// <summary>Test accuracy of an exported model through a stock ONNX Runtime session (length-sorted batches of 64).</summary>
    public static double Accuracy(string modelPath, IReadOnlyList<int[]> texts, long[] labels, int padId, int threads)
    {
        using var options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1 };
        using var session = new InferenceSession(modelPath, options);
        var order = Enumerable.Range(0, texts.Count).OrderBy(i => texts[i].Length).ToArray();
        var correct = 0;
        foreach (var chunk in order.Chunk(64))
        {
            var rows = chunk.Select(i => texts[i]).ToList();
            var (ids, mask, width) = W4Data.Pad(rows, padId);
            var logits = W4Data.Logits(session, ids, mask, rows.Count, width);
            var classes = logits.Length / rows.Count;
            for (var r = 0; r < rows.Count; r++)
            {
                var row = logits.AsSpan(r * classes, classes);
                var best = 0;
                for (var c = 1; c < classes; c++) if (row[c] > row[best]) best = c;
                if (best == labels[chunk[r]]) correct++;
            }
        }
        return (double)correct / texts.Count;
    }

    public static List<int[]> Ragged(SafeTensorsFile data, string prefix)
    {
        var ids = data.Get($"{prefix}_ids").ToInt64Array();
        var offsets = data.Get($"{prefix}_offsets").ToInt64Array();
        var rows = new List<int[]>(offsets.Length - 1);
        for (var i = 0; i + 1 < offsets.Length; i++)
            rows.Add(ids[(int)offsets[i]..(int)offsets[i + 1]].Select(v => (int)v).ToArray());
        return rows;
    }

    /// <summary>The batch plan: per epoch (every example once), per batch, the example indices.</summary>
    public static List<List<int[]>> Plan(SafeTensorsFile data)
    {
        var flat = data.Get("plan").ToInt64Array();
        var ends = data.Get("plan_batch_ends").ToInt64Array();
        var examples = data.Get("train_labels").ElementCount();
        var epochs = new List<List<int[]>>();
        long start = 0, inEpoch = examples;
        foreach (var end in ends)
        {
            if (inEpoch == examples) { epochs.Add([]); inEpoch = 0; }
            epochs[^1].Add(flat[(int)start..(int)end].Select(v => (int)v).ToArray());
            inEpoch += end - start;
            start = end;
        }
        return epochs;
    }
}
