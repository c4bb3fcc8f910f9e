using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting;
using OnnxTune.Samples;

// OnnxTune demo: continual learning on CLINC150 with all-MiniLM-L6-v2 sentence embeddings.
// A shipped intent model knows 5 of CLINC150's 10 domains. Then 5 new domains launch one after another, users send
// corrections through IFeedbackWriter, and AddOnDeviceFineTuning's background service trains rounds, gates each
// candidate on held-out feedback, and hot-swaps the promoted versions in, while the app keeps serving through
// IModelHandle. One buggy client sends shuffled labels halfway through: the gate rejects that round and the app
// deletes that client's feedback with one call.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
var options = DemoOptions.Parse(args);
if (options is null) return 2;
var wall = Stopwatch.StartNew();
var outDir = Path.GetFullPath(options.OutDir ?? Path.Combine(Clinc150.RepoRoot(), "artifacts", "demo"));
Directory.CreateDirectory(outDir);

// 1. Data: a fixed subset of CLINC150, split into the domains the shipped model knows and the ones that launch later.
var data = Clinc150.Load(Clinc150.Locate());
var oldDomains = data.Domains.Take(5).Select(d => d.Domain).ToHashSet(StringComparer.Ordinal);
var newDomainList = data.Domains.Skip(5).Select(d => d.Domain).ToList();
var labelOf = data.Intents.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => (long)p.i, StringComparer.Ordinal);
var train = Clinc150.Take(data.Train, options.TrainPerIntent);
var test = Clinc150.Take(data.Test, options.TestPerIntent);
Console.WriteLine($"CLINC150 subset: {train.Count} training and {test.Count} test utterances, {data.Intents.Count} intents in {data.Domains.Count} domains.");
Console.WriteLine($"  known at launch: {string.Join(", ", oldDomains)}");
Console.WriteLine($"  launched later:  {string.Join(", ", newDomainList)}");

SentenceEmbedder? embedder = null;
SentenceEmbedder Embedder() => embedder ??= new SentenceEmbedder();
var sw = Stopwatch.StartNew();
var trainX = IntentHead.EmbedCached(Path.Combine(outDir, "embeddings-train.safetensors"), train.Select(u => u.Text).ToList(), Embedder, Progress);
var testX = IntentHead.EmbedCached(Path.Combine(outDir, "embeddings-test.safetensors"), test.Select(u => u.Text).ToList(), Embedder, Progress);
Console.WriteLine($"{(Console.IsOutputRedirected ? "" : "\r")}Sentence embeddings (all-MiniLM-L6-v2, mean pooling, L2-normalised): {(embedder is null ? "cached in " + outDir : "computed")} in {sw.Elapsed.TotalSeconds:F1} s.{(Console.IsOutputRedirected ? "" : new string(' ', 20))}");
const int Dim = SentenceEmbedder.Dimension;

// The app ships a golden set next to its model: unseen utterances of the known domains (the next ones in CLINC150's
// training split). The gate rejects any candidate that loses more than GoldenTolerance on it.
var golden = data.Train.GroupBy(u => u.Intent, StringComparer.Ordinal)
    .Where(g => oldDomains.Contains(data.DomainOf[g.Key]))
    .SelectMany(g => g.Skip(options.TrainPerIntent).Take(options.GoldenPerIntent)).ToList();
var goldenX = IntentHead.EmbedCached(Path.Combine(outDir, "embeddings-golden.safetensors"), golden.Select(u => u.Text).ToList(), Embedder, Progress);
var goldenPath = Path.Combine(outDir, "golden.jsonl");
IntentHead.WriteGoldenSet(goldenPath, goldenX, golden.Select(u => u.Intent).ToList());

float[] Rows(float[] x, IEnumerable<int> rows) => rows.SelectMany(r => x.AsSpan(r * Dim, Dim).ToArray()).ToArray();
var testOld = Enumerable.Range(0, test.Count).Where(i => oldDomains.Contains(data.DomainOf[test[i].Intent])).ToArray();
var testNew = Enumerable.Range(0, test.Count).Where(i => !oldDomains.Contains(data.DomainOf[test[i].Intent])).ToArray();
var (oldX, oldY) = (Rows(testX, testOld), testOld.Select(i => labelOf[test[i].Intent]).ToArray());
var (newX, newY) = (Rows(testX, testNew), testNew.Select(i => labelOf[test[i].Intent]).ToArray());

// 2. The shipped model: a linear head (Gemm 384→150) trained on the known domains only, and its training artifacts.
var artifactsDir = Path.Combine(outDir, "artifacts");
var storeDir = Path.Combine(outDir, "store");
sw.Restart();
var baseRows = Enumerable.Range(0, train.Count).Where(i => oldDomains.Contains(data.DomainOf[train[i].Intent])).ToArray();
IntentHead.PretrainAndBuildArtifacts(artifactsDir, data.Intents, Rows(trainX, baseRows), baseRows.Select(i => labelOf[train[i].Intent]).ToArray(),
    epochs: 20, learningRate: options.BaseLearningRate, hidden: options.Hidden);
Console.WriteLine($"Base model (Gemm 384→{data.Intents.Count}) trained on {baseRows.Length} utterances of the known domains; artifacts in {artifactsDir} ({sw.Elapsed.TotalSeconds:F1} s).");
if (Directory.Exists(storeDir)) Directory.Delete(storeDir, recursive: true); // every run tells the story from the start

// 3. The app: one line of registration.
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = [] });
builder.Logging.SetMinimumLevel(LogLevel.Error); // the table reports rounds; the library logs them too (Information)
builder.Services.AddOnDeviceFineTuning(o =>
{
    o.ArtifactsPath = artifactsDir;
    o.ModelStorePath = storeDir;
    o.MinNewFeedback = options.WaveSize;
    o.CheckInterval = TimeSpan.FromMilliseconds(100);
    o.EpochsPerRound = options.Epochs;
    o.BatchSize = 32;
    o.LearningRate = options.LearningRate;
    o.ReplayRatio = options.ReplayRatio;
    o.HeldOutShare = 0.1;
    o.GoldenSetPath = options.Golden ? goldenPath : null;
    o.GoldenTolerance = options.GoldenTolerance;
    o.TrainingThreads = 1;
    o.KeepVersions = 5;
})
    .AddValidationGate<KnownDomainFloorGate>();
builder.Services.AddSingleton(new KnownDomainFloor(options.MaxKnownDrop));
using var host = builder.Build();
var handle = host.Services.GetRequiredService<IModelHandle>();
var writer = host.Services.GetRequiredService<IFeedbackWriter>();
var store = host.Services.GetRequiredService<IFeedbackStore>();
var events = host.Services.GetRequiredService<FineTuningEvents>();
var versions = host.Services.GetRequiredService<ModelVersionStore>();

TaskCompletionSource<RoundCompletedEventArgs>? pendingRound = null;
TimeSpan? lastSwap = null;
var swapTimes = new List<double>();
var roundTimes = new List<double>();
events.ModelSwapped += (_, e) =>
{
    lastSwap = e.SwapDuration;
    swapTimes.Add(e.SwapDuration.TotalMilliseconds);
};
events.RoundCompleted += (_, e) => pendingRound?.TrySetResult(e);
await host.StartAsync();

double Accuracy(float[] x, long[] y)
{
    var output = handle.Predict(new Dictionary<string, TensorData> { [IntentHead.InputName] = TensorData.Float(x, y.Length, Dim) });
    var predicted = IntentHead.ArgMax(output.Outputs[IntentHead.OutputName].FloatData!, data.Intents.Count);
    return (double)predicted.Where((p, i) => p == y[i]).Count() / y.Length;
}

var startOld = Accuracy(oldX, oldY);
// The app gate's floor: the shipped model's accuracy on the golden set (computed like the built-in evaluator does).
var goldenLabels = golden.Select(u => labelOf[u.Intent]).ToArray();
host.Services.GetRequiredService<KnownDomainFloor>().Shipped = Accuracy(goldenX, goldenLabels);
var startNew = Accuracy(newX, newY);
Console.WriteLine();
Console.WriteLine($"Serving the shipped model: old domains {startOld:P1}, new domains {startNew:P1} (test utterances: {oldY.Length} old, {newY.Length} new).");
Console.WriteLine($"Each wave: {options.WaveSize} training records (~{options.OldShare:P0} from known domains) plus ~10% held out for the gate; replay ratio {options.ReplayRatio}, {options.Epochs} epochs, lr {options.LearningRate}.");
Console.WriteLine();
var header = $"{"round",5} | {"feedback (domain)",-24} | {"train loss",10} | {"gate (held-out, golden: serving → candidate)",-54} | {"serving",7} | {"old acc",7} | {"new acc",7} | {"round",7} | {"swap",6}";
Console.WriteLine(header);
Console.WriteLine(new string('-', header.Length));
Console.WriteLine($"{0,5} | {"(shipped model)",-24} | {"",10} | {"",-54} | {"base",7} | {startOld,7:P1} | {startNew,7:P1} | {"",7} | {"",6}");

// 4. Feedback arrives in waves; each wave crosses MinNewFeedback exactly at its last record and starts one round.
var rng = new Random(2024);
var oldPool = Shuffled(baseRows);
var newPools = newDomainList.ToDictionary(d => d, d => Shuffled(Enumerable.Range(0, train.Count).Where(i => data.DomainOf[train[i].Intent] == d)), StringComparer.Ordinal);
int oldNext = 0;
var newNext = newDomainList.ToDictionary(d => d, _ => 0, StringComparer.Ordinal);
var poisonAfter = options.Poison ? Math.Max(1, options.Rounds / 2) : -1;
var waves = new List<(string Label, string? Domain, bool Poison)>();
for (var w = 0; w < options.Rounds; w++)
{
    var domain = newDomainList[Math.Min(newDomainList.Count - 1, w * newDomainList.Count / options.Rounds)];
    waves.Add((domain, domain, false));
    if (w + 1 == poisonAfter) waves.Add(("buggy client", domain, true));
}
var endOld = startOld;
var endNew = startNew;
var round = 0;
foreach (var (label, domain, poison) in waves)
{
    round++;
    var userId = poison ? "buggy-client" : null;
    var training = 0;
    var heldOut = 0;
    var i = 0;
    pendingRound = new TaskCompletionSource<RoundCompletedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
    lastSwap = null;
    while (training < options.WaveSize)
    {
        int row;
        if (rng.NextDouble() < options.OldShare) row = oldPool[oldNext++ % oldPool.Length];
        else row = newPools[domain!][newNext[domain!]++ % newPools[domain!].Length];
        // The buggy client sends ordinary traffic but attaches a random one of the 150 intents to every utterance.
        var intent = poison ? data.Intents[rng.Next(data.Intents.Count)] : train[row].Intent;
        var receipt = await writer.WriteAsync(new Feedback
        {
            Tensors = new Dictionary<string, TensorData> { [IntentHead.InputName] = TensorData.Float(trainX.AsSpan(row * Dim, Dim).ToArray(), 1, Dim) },
            Label = intent,
            UserId = userId ?? $"user-{i++ % 97}",
        });
        if (receipt.HeldOut) heldOut++;
        else training++;
    }
    var completed = await pendingRound.Task.WaitAsync(TimeSpan.FromMinutes(5));
    roundTimes.Add(completed.Duration.TotalMilliseconds);
    endOld = Accuracy(oldX, oldY);
    endNew = Accuracy(newX, newY);
    var d = completed.Decision;
    var gate = Gate(completed);
    var serving = handle.ServingVersion is { } v ? $"v{v}" : "base";
    var feedbackText = $"+{training}+{heldOut}h {label}";
    Console.WriteLine($"{round,5} | {feedbackText,-24} | {d?.TrainLoss ?? double.NaN,10:F4} | {gate,-54} | {serving,7} | {endOld,7:P1} | {endNew,7:P1} | {completed.Duration.TotalSeconds,6:F2}s | {(lastSwap is { } t ? $"{t.TotalMilliseconds,4:F0}ms" : "-"),6}");
    if (poison)
    {
        var deleted = await store.DeleteUserAsync("buggy-client");
        Console.WriteLine($"{"",5} | the app deletes the buggy client's feedback: {deleted} records (IFeedbackStore.DeleteUserAsync); later rounds never train on them");
    }
}
await host.StopAsync();

var kept = versions.ListVersions();
Console.WriteLine();
Console.WriteLine($"Versions kept in {versions.Root}: {string.Join(", ", kept.Select(k => "v" + k.Version))}; serving v{versions.GetCurrent()?.Version}.");
if (embedder is not null || options.Examples)
{
    // The served head on a few fresh sentences (MiniLM embedding → latest version).
    foreach (var text in new[] { "what's the exchange rate from dollars to yen", "set an alarm for 6 am", "please transfer $200 from checking to savings" })
    {
        var x = Embedder().Embed(text);
        var o = handle.Predict(new Dictionary<string, TensorData> { [IntentHead.InputName] = TensorData.Float(x, 1, Dim) });
        Console.WriteLine($"  \"{text}\" → {data.Intents[IntentHead.ArgMax(o.Outputs[IntentHead.OutputName].FloatData!, data.Intents.Count)[0]]}");
    }
}
embedder?.Dispose();
var oldDrop = (startOld - endOld) * 100;
var holds = endNew > startNew && oldDrop <= 2.0;
Console.WriteLine();
Console.WriteLine($"Summary: new domains {startNew:P1} → {endNew:P1}; old domains {startOld:P1} → {endOld:P1} ({(endOld - startOld) * 100:+0.0;-0.0} points, {(oldDrop <= 2.0 ? "within" : "NOT within")} 2 points); " +
                  $"median round {Median(roundTimes) / 1000:F2} s, median swap {Median(swapTimes):F0} ms; wall time {wall.Elapsed.TotalSeconds:F0} s. {(holds ? "OK" : "CHECK FAILED")}");
return 0;

int[] Shuffled(IEnumerable<int> rows)
{
    var a = rows.ToArray();
    rng.Shuffle(a);
    return a;
}

static string Gate(RoundCompletedEventArgs e)
{
    if (e.Outcome == RoundOutcome.Failed || e.Decision is not { } d) return "FAILED: " + e.Error?.Message;
    static string Pair(double? a, double? b) => a is { } x && b is { } y ? $"{x * 100:F1}→{y * 100:F1}" : "n/a";
    var heldOut = Pair(d.Serving.HeldOutMetric, d.Candidate.HeldOutMetric);
    var golden = Pair(d.Serving.GoldenMetric, d.Candidate.GoldenMetric);
    if (d.Promoted) return $"promoted  {heldOut}, {golden}";
    var failed = d.Checks.Where(c => !c.Passed).Select(c => c.Gate switch { "golden-set" => "golden", "known-domain-floor" => "floor", var g => g }).ToList();
    return $"REJECTED by {string.Join("+", failed)}  {heldOut}, {golden}";
}

static double Median(List<double> values) => values.Count == 0 ? double.NaN : values.Order().ElementAt(values.Count / 2);

static void Progress(int done, int total)
{
    // A live counter on a terminal; one line per thousand when the output is redirected.
    if (!Console.IsOutputRedirected) Console.Write($"\rEmbedding utterances with all-MiniLM-L6-v2 (first run only): {done}/{total}   ");
    else if (done == total || done / 1000 != (done - 64) / 1000) Console.WriteLine($"Embedding utterances with all-MiniLM-L6-v2 (first run only): {done}/{total}");
}

/// <summary>The shipped model's golden-set accuracy and how far below it a candidate may fall.</summary>
internal sealed class KnownDomainFloor(double maxDrop)
{
    public double MaxDrop { get; } = maxDrop;
    public double? Shipped { get; set; }
}

/// <summary>
/// An app-supplied gate: the built-in golden-set gate compares with the serving version, so small losses could add up
/// over many rounds; this one holds every candidate to the shipped model's golden-set accuracy minus a fixed margin.
/// </summary>
internal sealed class KnownDomainFloorGate(KnownDomainFloor floor) : IValidationGate
{
    public string Name => "known-domain-floor";

    public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken)
    {
        if (floor.Shipped is not { } shipped || context.Candidate.GoldenMetric is not { } c)
            return ValueTask.FromResult(GateCheckResult.Pass(Name, "no golden set"));
        var detail = $"golden {c:P1} vs shipped {shipped:P1} (max drop {floor.MaxDrop:P1})";
        return ValueTask.FromResult(c >= shipped - floor.MaxDrop - 1e-12 ? GateCheckResult.Pass(Name, detail) : GateCheckResult.Fail(Name, detail));
    }
}

/// <summary>Command-line options of the demo.</summary>
internal sealed record DemoOptions
{
    public int Rounds { get; init; } = 10;
    public int TrainPerIntent { get; init; } = 40;
    public int TestPerIntent { get; init; } = 30;
    public int WaveSize { get; init; } = 400;
    public double OldShare { get; init; } = 0.7;
    public double ReplayRatio { get; init; } = 3.0;
    public int Epochs { get; init; } = 3;
    public double LearningRate { get; init; } = 1e-2;
    public bool Poison { get; init; } = true;
    public bool Golden { get; init; } = true;
    public int Hidden { get; init; }
    public double BaseLearningRate { get; init; } = 1e-2;
    public int GoldenPerIntent { get; init; } = 10;
    public double GoldenTolerance { get; init; } = 0.02;
    public double MaxKnownDrop { get; init; } = 0.015;
    public bool Examples { get; init; } = true;
    public string? OutDir { get; init; }

    public static DemoOptions? Parse(string[] args)
    {
        var o = new DemoOptions();
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            switch (args[i])
            {
                case "--fast": o = o with { Rounds = 5 }; break;
                case "--rounds": o = o with { Rounds = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--wave": o = o with { WaveSize = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--epochs": o = o with { Epochs = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--lr": o = o with { LearningRate = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--replay": o = o with { ReplayRatio = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--old-share": o = o with { OldShare = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--no-poison": o = o with { Poison = false }; break;
                case "--no-golden": o = o with { Golden = false }; break;
                case "--hidden": o = o with { Hidden = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--base-lr": o = o with { BaseLearningRate = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--golden-tolerance": o = o with { GoldenTolerance = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--max-known-drop": o = o with { MaxKnownDrop = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--no-examples": o = o with { Examples = false }; break;
                case "--out": o = o with { OutDir = Next() }; break;
                case "-h" or "--help":
                    Console.WriteLine("""
                        dotnet run --project samples/OnnxTune.Demo [-- options]
                          --fast                5 rounds (one feedback wave per new domain) instead of 10
                          --rounds N            feedback waves (default 10; the 5 new domains launch evenly over them)
                          --wave N              training records per wave = MinNewFeedback (default 400)
                          --old-share X         share of known-domain feedback in a wave (default 0.7)
                          --epochs N            EpochsPerRound (default 3)
                          --lr X                LearningRate (default 0.01)
                          --replay X            ReplayRatio (default 3)
                          --golden-tolerance X  GoldenTolerance, versus the serving version (default 0.02)
                          --max-known-drop X    app gate: golden-set accuracy floor below the shipped model (default 0.015)
                          --no-golden           no golden set (known-domain utterances) in the gate
                          --no-poison           skip the buggy client's shuffled-label wave
                          --hidden N            base model Gemm 384→N→ReLU→Gemm N→150 instead of Gemm 384→150
                          --base-lr X           learning rate of the base model (default 0.01)
                          --no-examples         skip the example predictions at the end
                          --out DIR             output folder (default artifacts/demo)
                        """);
                    return null;
                default: throw new ArgumentException($"Unknown option '{args[i]}' (see --help).");
            }
        }
        if (o.Rounds < 1) throw new ArgumentException("--rounds must be at least 1.");
        return o;
    }
}
