using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;
using OnnxTune.Training;
using OnnxTune.Training.Caching;
using OnnxTune.Training.SafeTensors;
using DataType = Onnx.TensorProto.Types.DataType;

// Frozen-prefix cache benchmark (issue 3, item 4): all-MiniLM-L6-v2 + masked mean pooling + Linear(384 -> 150),
// head and encoder layers 4-5 trainable, on CLINC150 train sentences. Each mode runs in its own process so that
// peak memory is per mode:  --mode both (default) | full | cached.
var mode = Arg("--mode") ?? "both";
var examplesCount = int.Parse(Arg("--examples") ?? "512", CultureInfo.InvariantCulture);
var epochs = int.Parse(Arg("--epochs") ?? "2", CultureInfo.InvariantCulture);
var batchSize = int.Parse(Arg("--batch") ?? "32", CultureInfo.InvariantCulture);
var threads = int.Parse(Arg("--threads") ?? "2", CultureInfo.InvariantCulture);
var layers = int.Parse(Arg("--layers") ?? "2", CultureInfo.InvariantCulture);
if (layers is < 0 or > 2) throw new ArgumentException("--layers takes 0, 1 or 2 (trainable top encoder layers besides the head).");
var work = Arg("--work") ?? Path.Combine(Path.GetTempPath(), "onnxtune-bench-prefix");
var json = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

if (mode == "both")
{
    if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
    var full = RunChild("full");
    var cached = RunChild("cached");
    PrintTable(full, cached);
    return 0;
}

var result = mode switch
{
    "full" => RunFull(),
    "cached" => RunCached(),
    _ => throw new ArgumentException($"Unknown --mode '{mode}' (both, full, cached)."),
};
Console.WriteLine("RESULT " + JsonSerializer.Serialize(result, json));
return 0;

ModeResult RunFull()
{
    var (model, trainable, examples, batches) = Prepare();
    var sw = Stopwatch.StartNew();
    var dir = Path.Combine(work, "full");
    BuildArtifacts(model, trainable, dir);
    var artifactSeconds = sw.Elapsed.TotalSeconds;
    using var session = TrainingEngine.Open(dir, new TrainingEngineOptions { IntraOpThreads = threads, InterOpThreads = 1 });
    var epochSeconds = new List<double>();
    var losses = new List<float>();
    var epochLoss = new List<double>();
    var epochCpu = new List<double>();
    for (var e = 0; e < epochs; e++)
    {
        sw.Restart();
        var cpu = CpuSeconds();
        var these = new List<float>();
        foreach (var batch in batches)
        {
            these.Add(session.TrainStep(ExampleBatches.Stack(batch)));
            session.OptimizerStep();
        }
        epochSeconds.Add(sw.Elapsed.TotalSeconds);
        epochCpu.Add(CpuSeconds() - cpu);
        epochLoss.Add(these.Average());
        if (e == 0) losses.AddRange(these);
        Console.Error.WriteLine($"[full] epoch {e + 1}: {epochSeconds[^1]:F2} s ({epochCpu[^1]:F2} s CPU), mean loss {epochLoss[^1]:F4}");
    }
    return new ModeResult("full", Describe(trainable), examples.Count, batches.Count, artifactSeconds, 0, 0, 0, 0, 0, epochSeconds, epochCpu, epochLoss, losses, PeakMb(), "");
}

ModeResult RunCached()
{
    var (model, trainable, examples, batches) = Prepare();
    var sw = Stopwatch.StartNew();
    var split = FrozenPrefixSplitter.Split(model, trainable);
    var dir = Path.Combine(work, "cached");
    split.Save(Path.Combine(dir, "split"));
    BuildArtifacts(split.Suffix, trainable, Path.Combine(dir, "artifacts"));
    var artifactSeconds = sw.Elapsed.TotalSeconds;
    var cacheFile = Path.Combine(dir, "activations.safetensors");
    var cacheOptions = new ActivationCacheOptions { BatchSize = batchSize, FilePath = cacheFile, IntraOpThreads = threads };

    double buildSeconds, buildCpu;
    long cacheBytes;
    using (var cache = new ActivationCache(split, cacheOptions))
    {
        var cpu = CpuSeconds();
        var build = cache.Build(examples);
        buildCpu = CpuSeconds() - cpu;
        buildSeconds = build.Elapsed.TotalSeconds;
        cacheBytes = cache.Bytes;
        Console.Error.WriteLine($"[cached] cache built: {build.Computed} examples in {build.PrefixRuns} prefix runs, {buildSeconds:F2} s (file write included), {cacheBytes / 1e6:F1} MB");
    }

    // A later round: reopen from the file, as a new process would.
    sw.Restart();
    using var reopened = new ActivationCache(split, cacheOptions);
    var reuse = reopened.Build(examples);
    var loadSeconds = sw.Elapsed.TotalSeconds;
    if (reuse.Computed != 0) throw new InvalidOperationException($"The reopened cache recomputed {reuse.Computed} examples.");

    using var session = TrainingEngine.Open(Path.Combine(dir, "artifacts"), new TrainingEngineOptions { IntraOpThreads = threads, InterOpThreads = 1 });
    var trainer = new CachedTrainer(session, reopened);
    var epochSeconds = new List<double>();
    var epochCpu = new List<double>();
    var epochLoss = new List<double>();
    var losses = new List<float>();
    for (var e = 0; e < epochs; e++)
    {
        var cpu = CpuSeconds();
        var r = trainer.TrainEpoch(batches);
        epochCpu.Add(CpuSeconds() - cpu);
        epochSeconds.Add(r.Elapsed.TotalSeconds);
        epochLoss.Add(r.MeanLoss);
        if (e == 0) losses.AddRange(r.Losses);
        Console.Error.WriteLine($"[cached] epoch {e + 1}: {epochSeconds[^1]:F2} s ({epochCpu[^1]:F2} s CPU), mean loss {epochLoss[^1]:F4}");
    }
    var frontier = string.Join(", ", split.Manifest.Frontier.Select(f => $"{f.Name} {f.ElementType}[{string.Join(",", f.Shape)}]"));
    return new ModeResult("cached", Describe(trainable), examples.Count, batches.Count, artifactSeconds, buildSeconds, buildCpu, loadSeconds, cacheBytes, new FileInfo(cacheFile).Length, epochSeconds, epochCpu, epochLoss, losses, PeakMb(), frontier);
}

(ModelProto Model, List<string> Trainable, List<TrainingExample> Examples, IReadOnlyList<IReadOnlyList<TrainingExample>> Batches) Prepare()
{
    var files = MiniLmModel.Extract();
    var model = WithClassificationHead(OnnxModelReader.Load(files.ModelPath), classes: 150, seed: 1234);
    // The exporter numbers the MatMul weights: these six belong to layer 4, those to layer 5.
    var numbered = new Dictionary<int, string[]>
    {
        [4] = ["979", "980", "983", "989", "990", "991"],
        [5] = ["992", "993", "996", "1002", "1003", "1004"],
    };
    var top = Enumerable.Range(6 - layers, layers).ToList();
    var trainable = model.Graph.Initializer.Select(t => t.Name)
        .Where(n => n.StartsWith("head.", StringComparison.Ordinal)
            || top.Any(l => n.StartsWith($"encoder.layer.{l}.", StringComparison.Ordinal) || numbered[l].Contains(n)))
        .ToList();

    var (texts, labels) = Clinc150(examplesCount);
    var encoder = BertTextEncoder.FromVocabulary(files.VocabularyPath, new BertTextEncoderOptions { MaxLength = 64 });
    var examples = new List<TrainingExample>(texts.Count);
    for (var i = 0; i < texts.Count; i++)
    {
        var ids = encoder.Encode(texts[i]);
        // Length buckets of 8 tokens: examples are cached at their bucket length and batched within a bucket.
        var length = (ids.Length + 7) / 8 * 8;
        var inputIds = new long[length];
        var mask = new long[length];
        for (var t = 0; t < ids.Length; t++) { inputIds[t] = ids[t]; mask[t] = 1; }
        for (var t = ids.Length; t < length; t++) inputIds[t] = encoder.PaddingTokenId;
        examples.Add(new TrainingExample($"clinc-train-{i}",
        [
            SafeTensor.FromInt64s(BertInputNames.InputIds, inputIds, length),
            SafeTensor.FromInt64s(BertInputNames.AttentionMask, mask, length),
            SafeTensor.FromInt64s(BertInputNames.TokenTypeIds, new long[length], length),
        ], SafeTensor.FromInt64s("labels", [labels[i]])));
    }
    return (model, trainable, examples, ExampleBatches.Create(examples, batchSize, seed: 42));
}

void BuildArtifacts(ModelProto model, List<string> trainable, string dir)
{
    var artifacts = ArtifactBuilder.Build(model, new ArtifactOptions
    {
        Selection = new ParameterSelection { TrainableNames = trainable },
        Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
        Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 5e-4 },
    });
    ArtifactBuilder.Save(artifacts, dir);
}

(List<string> Texts, List<long> Labels) Clinc150(int count)
{
    var path = FindUp(Path.Combine("samples", "datasets", "clinc150", "data_full.json"));
    using var doc = JsonDocument.Parse(File.ReadAllText(path));
    var rows = doc.RootElement.GetProperty("train").EnumerateArray().Select(r => (Text: r[0].GetString()!, Intent: r[1].GetString()!)).ToList();
    var intents = rows.Select(r => r.Intent).Distinct().Order(StringComparer.Ordinal).ToList();
    // An even spread over the (intent-ordered) train split, so every intent appears.
    var step = Math.Max(1, rows.Count / count);
    var chosen = Enumerable.Range(0, count).Select(i => rows[i * step % rows.Count]).ToList();
    return (chosen.Select(r => r.Text).ToList(), chosen.Select(r => (long)intents.IndexOf(r.Intent)).ToList());
}

static ModelProto WithClassificationHead(ModelProto encoder, int classes, int seed)
{
    // logits = Linear(mean of last_hidden_state over unmasked tokens), initialised like torch.nn.Linear.
    var model = encoder.Clone();
    var g = model.Graph;
    var e = new GraphEditor(g);
    var hidden = g.Output[0].Name;
    var mask = e.Add("Cast", [BertInputNames.AttentionMask], "pool_mask", Attr.Int("to", (long)DataType.Float));
    var mask3 = e.Add("Unsqueeze", [mask, e.ConstantInt64s("pool_last_axis", -1)], "pool_mask_3d");
    var seqAxis = e.ConstantInt64s("pool_seq_axis", 1);
    var sum = e.Add("ReduceSum", [e.Add("Mul", [hidden, mask3], "pool_masked"), seqAxis], "pool_sum", Attr.Int("keepdims", 0));
    var count = e.Add("Max", [e.Add("ReduceSum", [mask3, seqAxis], "pool_count", Attr.Int("keepdims", 0)), e.ConstantFloat("pool_eps", 1e-9f)], "pool_count_clamped");
    var pooled = e.Add("Div", [sum, count], "pooled");
    var rng = new Random(seed);
    var bound = 1 / Math.Sqrt(MiniLmModel.HiddenSize);
    float Uniform() => (float)((rng.NextDouble() * 2 - 1) * bound);
    var w = e.AddInitializer(TensorProtos.Float("head.weight", Enumerable.Range(0, classes * MiniLmModel.HiddenSize).Select(_ => Uniform()).ToArray(), classes, MiniLmModel.HiddenSize), makeUnique: false);
    var b = e.AddInitializer(TensorProtos.Float("head.bias", Enumerable.Range(0, classes).Select(_ => Uniform()).ToArray(), classes), makeUnique: false);
    e.AddNode("Gemm", [pooled, w, b], [e.Reserve("logits")], Attr.Int("transB", 1));
    g.Output.Clear();
    g.Output.Add(ValueInfos.Tensor("logits", DataType.Float, "batch", (long)classes));
    return model;
}

ModeResult RunChild(string childMode)
{
    var host = Environment.ProcessPath!;
    var args = new List<string>();
    if (Path.GetFileNameWithoutExtension(host) == "dotnet") args.Add(typeof(ModeResult).Assembly.Location);
    args.AddRange(["--mode", childMode, "--examples", examplesCount.ToString(CultureInfo.InvariantCulture), "--epochs", epochs.ToString(CultureInfo.InvariantCulture),
        "--batch", batchSize.ToString(CultureInfo.InvariantCulture), "--threads", threads.ToString(CultureInfo.InvariantCulture), "--layers", layers.ToString(CultureInfo.InvariantCulture), "--work", work]);
    var start = new ProcessStartInfo(host, args) { RedirectStandardOutput = true };
    using var p = Process.Start(start)!;
    var output = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"The {childMode} run failed (exit {p.ExitCode}).");
    var line = output.Split('\n').Last(l => l.StartsWith("RESULT ", StringComparison.Ordinal));
    return JsonSerializer.Deserialize<ModeResult>(line["RESULT ".Length..], json)!;
}

static void PrintTable(ModeResult full, ModeResult cached)
{
    static string List(IEnumerable<double> values) => string.Join(" / ", values.Select(s => s.ToString("F2", CultureInfo.InvariantCulture)));
    static double Steady(List<double> values) => values.Skip(1).DefaultIfEmpty(values[0]).Average();
    var fullEpoch = Steady(full.EpochSeconds);
    var cachedEpoch = Steady(cached.EpochSeconds);
    var fullCpu = Steady(full.EpochCpuSeconds);
    var cachedCpu = Steady(cached.EpochCpuSeconds);
    var maxDiff = full.FirstEpochLosses.Zip(cached.FirstEpochLosses).Max(p => Math.Abs(p.First - p.Second));
    Console.WriteLine($"all-MiniLM-L6-v2 + mean-pool + Linear(384->150); trainable: {full.Trainable}; {full.Examples} CLINC150 train sentences, {full.Batches} batches (<= 32, length buckets of 8), AdamW; {Environment.ProcessorCount} cores shared with other jobs (load average {LoadAverage()}), so wall times are noisy: CPU seconds are the steadier measure");
    Console.WriteLine($"frontier: {cached.Frontier}");
    Console.WriteLine();
    Console.WriteLine("| mode | artifacts build (s) | cache build (s wall / CPU) | cache reload (s) | epoch wall (s) | epoch CPU (s) | steady epoch wall / CPU (s) | peak RSS (MB) |");
    Console.WriteLine("|---|---:|---:|---:|---|---|---:|---:|");
    Console.WriteLine($"| full model | {full.ArtifactSeconds:F1} | - | - | {List(full.EpochSeconds)} | {List(full.EpochCpuSeconds)} | {fullEpoch:F2} / {fullCpu:F2} | {full.PeakMb:F0} |");
    Console.WriteLine($"| frozen-prefix cache | {cached.ArtifactSeconds:F1} | {cached.CacheBuildSeconds:F2} / {cached.CacheBuildCpuSeconds:F2} | {cached.CacheLoadSeconds:F2} | {List(cached.EpochSeconds)} | {List(cached.EpochCpuSeconds)} | {cachedEpoch:F2} / {cachedCpu:F2} | {cached.PeakMb:F0} |");
    Console.WriteLine();
    Console.WriteLine($"speed-up per steady epoch: {fullEpoch / cachedEpoch:F2}x wall, {fullCpu / cachedCpu:F2}x CPU; cache: {cached.CacheBytes / 1e6:F1} MB in memory, {cached.CacheFileBytes / 1e6:F1} MB on disk");
    var saved = fullCpu - cachedCpu;
    Console.WriteLine(saved > 0
        ? $"the cache build (CPU) is paid back after {cached.CacheBuildCpuSeconds / saved:F2} epochs"
        : "the cached epoch saved no CPU time in this run");
    Console.WriteLine($"mean loss per epoch: full {List(full.EpochLoss)}; cached {List(cached.EpochLoss)}");
    Console.WriteLine($"max |loss difference| over the {full.FirstEpochLosses.Count} steps of epoch 1: {maxDiff:E2}");
}

static string Describe(List<string> trainable)
{
    var layerNames = trainable.Select(n => System.Text.RegularExpressions.Regex.Match(n, @"^encoder\.layer\.(\d)\.")).Where(m => m.Success)
        .Select(m => m.Groups[1].Value).Distinct().Order(StringComparer.Ordinal).ToList();
    return $"head{(layerNames.Count > 0 ? " + encoder layers " + string.Join(", ", layerNames) : "")} ({trainable.Count} tensors)";
}

static double CpuSeconds()
{
    using var p = Process.GetCurrentProcess();
    return p.TotalProcessorTime.TotalSeconds;
}

static string LoadAverage()
{
    try { return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
    catch (IOException) { return "n/a"; }
}

static double PeakMb()
{
    using var p = Process.GetCurrentProcess();
    p.Refresh();
    return p.PeakWorkingSet64 / 1e6;
}

static string FindUp(string relative)
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, relative))) return Path.Combine(dir.FullName, relative);
    throw new FileNotFoundException($"'{relative}' was not found in any parent of {AppContext.BaseDirectory}.");
}

string? Arg(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

internal sealed record ModeResult(
    string Mode, string Trainable, int Examples, int Batches, double ArtifactSeconds, double CacheBuildSeconds, double CacheBuildCpuSeconds, double CacheLoadSeconds,
    long CacheBytes, long CacheFileBytes, List<double> EpochSeconds, List<double> EpochCpuSeconds, List<double> EpochLoss, List<float> FirstEpochLosses, double PeakMb, string Frontier);
