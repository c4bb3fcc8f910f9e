using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Hosting;
using OnnxTune.Samples;

// Per-tenant personalization: one shared intent model (MiniLM, top two layers + head, trained offline on CLINC150)
// and three tenants that label the same utterances their own way. Each tenant's corrections carry its PartitionKey;
// the host trains one LoRA adapter per tenant on the shared model, gates it, and serves it through ONNX Runtime's
// adapter API for predictions that name the tenant. --figures adds the cost of many adapters (issue 12's figures).
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
var perIntent = new Option<int>("--per-intent") { Description = "Training utterances per intent for the shared model.", DefaultValueFactory = _ => 40 };
var records = new Option<int>("--records") { Description = "Training records per tenant.", DefaultValueFactory = _ => 20 };
var figures = new Option<bool>("--figures") { Description = "Also measure 1,000 adapters: disk, memory, predict latency, round times." };
var adapters = new Option<int>("--adapters") { Description = "Adapters loaded for the memory figure.", DefaultValueFactory = _ => 1000 };
var outDir = new Option<string?>("--out") { Description = "Work folder (default artifacts/personalization)." };
var epochs = new Option<int?>("--epochs") { Description = "Personalization:EpochsPerRound (default: the library's)." };
var lr = new Option<double?>("--lr") { Description = "Personalization:LearningRate (default: the library's)." };
var root = new RootCommand("OnnxTune per-tenant personalization sample") { perIntent, records, figures, adapters, outDir, epochs, lr };
root.SetAction(async (r, ct) => await RunAsync(r.GetValue(perIntent), r.GetValue(records), r.GetValue(figures), r.GetValue(adapters), r.GetValue(outDir),
    o =>
    {
        if (r.GetValue(epochs) is { } e) o.EpochsPerRound = e;
        if (r.GetValue(lr) is { } l) o.LearningRate = l;
    }));
return await root.Parse(args).InvokeAsync();

static async Task<int> RunAsync(int perIntent, int recordsPerTenant, bool figures, int adapterCount, string? outDir, Action<PersonalizationOptions> tune)
{
    var wall = Stopwatch.StartNew();
    var dir = Path.GetFullPath(outDir ?? Path.Combine(Clinc150.RepoRoot(), "artifacts", "personalization"));
    var data = Clinc150.Load(Clinc150.Locate());

    // Offline: the shared model, trained on every intent (cached across runs).
    var sw = Stopwatch.StartNew();
    var (artifacts, trained, reused) = EncoderIntentModel.Prepare(Path.Combine(dir, "model"), data.Intents, Clinc150.Take(data.Train, perIntent),
        new EncoderIntentSettings(), line => Console.WriteLine("  " + line));
    Console.WriteLine($"shared model: {(reused ? "reused" : "trained")} ({perIntent} utterances per intent, {sw.Elapsed.TotalSeconds:F0} s)");
    var golden = Path.Combine(dir, "golden.jsonl");
    File.WriteAllLines(golden, Clinc150.Take(data.Train.Reverse(), 4).Select(u => System.Text.Json.JsonSerializer.Serialize(new { text = u.Text, label = u.Intent })));
    var store = Path.Combine(dir, "store");
    if (Directory.Exists(store)) Directory.Delete(store, recursive: true);

    var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = [] });
    builder.Logging.SetMinimumLevel(LogLevel.Warning);
    builder.Services.AddOnDeviceFineTuning(o =>
    {
        o.ArtifactsPath = artifacts;
        o.TrainedModelPath = trained;
        o.ModelStorePath = store;
        o.GoldenSetPath = golden;
        o.MinNewFeedback = 1_000_000;          // shared rounds only on request here
        o.CheckInterval = TimeSpan.FromSeconds(1);
        o.TrainingThreads = 2;
        o.Personalization.Enabled = true;      // one LoRA adapter per PartitionKey
        o.Personalization.MinNewFeedback = 1_000_000; // adapter rounds only on request here
        tune(o.Personalization);
    });
    using var host = builder.Build();
    await host.StartAsync();
    var classifier = host.Services.GetRequiredService<ITextClassifier>();
    var writer = host.Services.GetRequiredService<IFeedbackWriter>();
    var admin = host.Services.GetRequiredService<IPersonalizationAdmin>();
    var fineTuning = host.Services.GetRequiredService<IFineTuningAdmin>();

    // Tenants: each relabels the utterances of 5 intents by a rotation of its own (the same utterances, other labels).
    var rng = new Random(7);
    var tenants = new Dictionary<string, Dictionary<string, string>>(StringComparer.Ordinal);
    foreach (var name in new[] { "acme", "globex", "initech" })
    {
        var picked = data.Intents.OrderBy(_ => rng.Next()).Take(5).ToList();
        tenants[name] = picked.Select((intent, i) => (intent, picked[(i + 1) % picked.Count])).ToDictionary(p => p.intent, p => p.Item2, StringComparer.Ordinal);
    }
    string Label(string? tenant, string intent) => tenant is not null && tenants[tenant].TryGetValue(intent, out var l) ? l : intent;
    var test = Clinc150.Take(data.Test, 10);
    double Accuracy(string? tenant, IEnumerable<Utterance> rows)
    {
        var list = rows.ToList();
        var predicted = classifier.PredictBatch([.. list.Select(u => u.Text)], tenant);
        return (double)list.Zip(predicted).Count(p => p.Second.Label == Label(tenant, p.First.Intent)) / list.Count;
    }
    var sharedBefore = Accuracy(null, test);
    Console.WriteLine($"shared model: {sharedBefore:P1} on {test.Count} test utterances (common labels)");

    var roundTimes = new List<double>();
    foreach (var (tenant, map) in tenants)
    {
        // The tenant's corrections: training utterances of its relabeled intents (beyond those the shared model saw).
        var corrections = data.Train.Where(u => map.ContainsKey(u.Intent)).GroupBy(u => u.Intent)
            .SelectMany(g => g.Skip(perIntent).Take((recordsPerTenant + map.Count - 1) / map.Count)).Take(recordsPerTenant).ToList();
        foreach (var u in corrections)
            await writer.WriteAsync(new Feedback { Text = u.Text, Label = map[u.Intent], PartitionKey = tenant });
        var round = await admin.RunRoundAsync(tenant) ?? throw new InvalidOperationException("no records");
        roundTimes.Add(round.Duration.TotalSeconds);
        var own = Accuracy(tenant, test);
        var relabeled = Accuracy(tenant, test.Where(u => map.ContainsKey(u.Intent)));
        Console.WriteLine($"{tenant}: adapter round {round.Outcome} in {round.Duration.TotalSeconds:F1} s (train {round.Statistics.TrainTime.TotalSeconds:F1} s), " +
            $"{corrections.Count} records; own convention {own:P1} on all {test.Count} test utterances, {relabeled:P1} on its 5 relabeled intents" +
            (round.Reasons.Count > 0 ? $"; {string.Join("; ", round.Reasons)}" : ""));
    }
    var sharedAfter = Accuracy(null, test);
    Console.WriteLine($"shared model after the adapters: {sharedAfter:P1} (was {sharedBefore:P1})");

    if (figures)
        await Figures(host.Services, classifier, writer, fineTuning, admin, data, tenants, store, adapterCount, roundTimes);
    await host.StopAsync();
    Console.WriteLine($"done in {wall.Elapsed.TotalSeconds:F0} s");
    return admin.ListAdapters().Count == tenants.Count ? 0 : 1;
}

static async Task Figures(IServiceProvider services, ITextClassifier classifier, IFeedbackWriter writer, IFineTuningAdmin fineTuning, IPersonalizationAdmin admin,
    Clinc150 data, Dictionary<string, Dictionary<string, string>> tenants, string store, int adapterCount, List<double> roundTimes)
{
    var promoted = admin.ListAdapters();
    if (promoted.Count == 0)
    {
        Console.WriteLine("figures: no tenant adapter was promoted, nothing to measure");
        return;
    }
    var info = promoted[0];
    var baseModel = Directory.GetFiles(Path.Combine(store, "personalization", "bases"), "adapter-base.onnx", SearchOption.AllDirectories).Single();
    var adapterFile = Directory.GetFiles(Path.Combine(store, "personalization", "keys"), "*.onnx_adapter", SearchOption.AllDirectories).First();
    var fullCopy = new FileInfo(baseModel).Length;
    Console.WriteLine($"disk: adapter {info.SizeBytes / 1024.0:F0} KiB vs full model copy {fullCopy / 1048576.0:F1} MiB ({100.0 * info.SizeBytes / fullCopy:F2} %)");
    Console.WriteLine($"disk, {adapterCount} tenants: {adapterCount * info.SizeBytes / 1048576.0:F0} MiB of adapters vs {adapterCount * fullCopy / 1073741824.0:F1} GiB of full copies");

    // Memory: the RSS one more adapter costs, against one more session of the full model.
    var tmp = Directory.CreateTempSubdirectory("onnxtune-adapters-");
    try
    {
        var files = Enumerable.Range(0, adapterCount).Select(i => Path.Combine(tmp.FullName, $"a{i}.onnx_adapter")).ToList();
        foreach (var f in files) File.Copy(adapterFile, f);
        GC.Collect();
        var before = Rss();
        var loaded = files.Select(f => OrtLoraAdapter.Create(f, null)).ToList();
        var perAdapter = (Rss() - before) / (double)adapterCount;
        using var so = new SessionOptions { IntraOpNumThreads = 1 };
        var beforeSession = Rss();
        using var session = new InferenceSession(baseModel, so);
        var perSession = Rss() - beforeSession;
        Console.WriteLine($"memory: {adapterCount} loaded adapters {perAdapter * adapterCount / 1048576.0:F0} MiB ({perAdapter / 1024.0:F0} KiB each) vs one more model session {perSession / 1048576.0:F0} MiB " +
            $"({100.0 * perAdapter / perSession:F2} %; {adapterCount} full copies ≈ {adapterCount * perSession / 1073741824.0:F1} GiB)");
        foreach (var a in loaded) a.Dispose();
    }
    finally
    {
        tmp.Delete(recursive: true);
    }

    // Predict latency through the hosting API: with a tenant's adapter against the shared model, interleaved.
    var texts = Clinc150.Take(data.Test, 2).Select(u => u.Text).ToList();
    var tenant = info.PartitionKey;
    for (var i = 0; i < 20; i++) { classifier.Predict(texts[i], tenant); classifier.Predict(texts[i]); }
    var withAdapter = new List<double>();
    var shared = new List<double>();
    foreach (var text in texts)
    {
        var t = Stopwatch.GetTimestamp();
        classifier.Predict(text, tenant);
        withAdapter.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
        t = Stopwatch.GetTimestamp();
        classifier.Predict(text);
        shared.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
    }
    Console.WriteLine($"predict ({texts.Count} texts, 1 thread): with adapter p50 {Percentile(withAdapter, 50):F2} ms p99 {Percentile(withAdapter, 99):F2} ms; " +
        $"shared p50 {Percentile(shared, 50):F2} ms p99 {Percentile(shared, 99):F2} ms");

    // A per-key round of 20 records against a full-model round of 20 records.
    foreach (var u in data.Train.Skip(3000).Take(20)) await writer.WriteAsync(Feedback.ForText(u.Text, u.Intent));
    var full = await fineTuning.RunRoundAsync();
    Console.WriteLine($"rounds of 20 records: adapter {string.Join(" / ", roundTimes.Select(t => t.ToString("F1")))} s (the first includes building the LoRA artifacts); " +
        $"full model {full?.Duration.TotalSeconds:F1} s (train {full?.Statistics.TrainTime.TotalSeconds:F1} s, {full?.Statistics.NewRecords} new + {full?.Statistics.ReplayRecords} replayed)");
}

static long Rss()
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
    return Environment.WorkingSet;
}

static double Percentile(List<double> values, double p)
{
    var sorted = values.Order().ToList();
    return sorted[(int)Math.Min(sorted.Count - 1, Math.Ceiling(p / 100 * sorted.Count) - 1)];
}
