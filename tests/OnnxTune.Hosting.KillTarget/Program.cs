// A Generic Host app over one work folder (<work>/artifacts written by the test, <work>/store owned by the host),
// started by OnnxTune.Hosting.Tests' KillRestartTests as a child process so that it can be killed hard mid-round.
// It speaks a line protocol on stdout (each line flushed as it is written):
//
//   feed <work> [--epochs N] [--batch-size B] [--seed S] [--interval-ms M] [--max-records R] [--stop-after-version V] [--lifetime-seconds T]
//     READY <serving>            the host started (serving: a version number or "base")
//     ACCEPTED <id>              printed only after IFeedbackWriter.WriteAsync returned (the record is durable)
//     ROUND_STARTED <round>      the background service started a round (log event 4002)
//     EPOCH <round> <epoch>      the training engine finished an epoch (debug log event 4061)
//     PROBE <version> <floats>   the promoted model's logits on fixed probe inputs
//     PROMOTED <version>         a round promoted its candidate and it is serving
//     ROUND_COMPLETED <round> <outcome>
//     STOPPED                    graceful exit after --stop-after-version was promoted
//     CRASH <point>              --crash-at <point> [--crash-hit N]: printed just before the process SIGKILLs itself at the
//                                N-th (default 1st) hit of that promotion step (after-version-folder, after-pointer,
//                                after-watermark, during-prune); --keep-versions K sets KeepVersions
//   hold <work>
//     READY <serving>            the host started and holds the store until the process is killed
//   verify <work>
//     LOCKED <pid> <host>        the store is held by another process (StoreLockedException); exit code 4
//     SERVING <serving>          IModelHandle.ServingVersion right after start
//     PROBE <serving> <floats>
//     RECORD <id>                every feedback record in the store (training and held-out)
//     RECORDS <count>
//     VERSIONS <v1,v2,...>       complete version folders
//     WATERMARK <seq>            the training watermark after start (reconciled)
//     UPTO <seq|none>            the serving version's provenance upTo sequence
//     LOADS <v> <ok|error>       every listed version opened in an InferenceSession
//     LEFTOVERS <names>          entries of the versions folder that are not version folders or the pointer
//
// Logs go to stderr. The process ends itself after --lifetime-seconds (default 120) so that it cannot outlive a
// crashed test run.
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting;

if (args.Length < 2 || args[0] is not ("feed" or "verify" or "hold"))
{
    await Console.Error.WriteLineAsync("usage: OnnxTune.Hosting.KillTarget feed|verify|hold <work-folder> [options]");
    return 2;
}
var mode = args[0];
var work = Path.GetFullPath(args[1]);
var crashAt = TakeOption(ref args, "crash-at");
var options = ParseOptions(args.AsSpan(2));
int Option(string name, int fallback) => options.TryGetValue(name, out var v) ? v : fallback;

var lifetime = TimeSpan.FromSeconds(Option("lifetime-seconds", 120));
_ = Task.Delay(lifetime).ContinueWith(_ =>
{
    Console.Error.WriteLine($"KillTarget: lifetime of {lifetime} exceeded, exiting");
    Environment.Exit(3);
}, TaskScheduler.Default);

var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
builder.Logging.SetMinimumLevel(LogLevel.Information);
builder.Logging.AddFilter("OnnxTune", LogLevel.Debug);
builder.Logging.AddProvider(new ProtocolLoggerProvider());
builder.Services.AddOnDeviceFineTuning(o =>
{
    o.ArtifactsPath = Path.Combine(work, "artifacts");
    o.ModelStorePath = Path.Combine(work, "store");
    o.MinNewFeedback = 24;
    o.HeldOutShare = 0.3;
    o.MinHeldOutImprovement = 0;
    // The crash tests assume round 1 promotes; on 7 held-out records the non-inferiority bound can reject a better
    // candidate (CI: 0.57 vs 0.29 rejected, lower bound -0.16), which moves the watermark the tests check.
    o.Gate.HeldOutMargin = 1.0;
    o.EpochsPerRound = Option("epochs", 100);
    o.BatchSize = Option("batch-size", 16);
    o.LearningRate = 0.01;
    o.ReplayRatio = 1; // rounds sized as the crash timings were tuned for (the library default is 2)
    o.TrainingThreads = 1;
    o.InferenceThreads = 1;
    o.KeepVersions = Option("keep-versions", 5);
    // verify must not start a round of its own over the feedback the killed round left pending.
    o.CheckInterval = mode == "feed" ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromHours(1);
    o.MaxInterval = TimeSpan.FromHours(1);
});
using var host = builder.Build();
IModelHandle handle;
try
{
    handle = host.Services.GetRequiredService<IModelHandle>();
}
catch (StoreLockedException e)
{
    Protocol.Write($"LOCKED {e.HolderProcessId} {e.HolderHost}");
    await Console.Error.WriteLineAsync(e.Message);
    return 4;
}

if (crashAt is not null)
{
    var hits = 0;
    var crashHit = Option("crash-hit", 1);
    OnnxTune.Hosting.Internal.CrashPoints.Hook = point =>
    {
        if (point != crashAt || ++hits != crashHit) return;
        Protocol.Write($"CRASH {point}");
        // SIGKILL on Linux: no finally block, no shutdown code, no flush beyond what was already written.
        System.Diagnostics.Process.GetCurrentProcess().Kill();
    };
}

if (mode == "hold")
{
    await host.StartAsync();
    Protocol.Write($"READY {Show(handle.ServingVersion)}");
    await Task.Delay(Timeout.Infinite);
}

if (mode == "verify")
{
    await host.StartAsync();
    var serving = handle.ServingVersion;
    Protocol.Write($"SERVING {Show(serving)}");
    Protocol.Write($"PROBE {Show(serving)} {Probe(handle)}");
    var store = host.Services.GetRequiredService<IFeedbackStore>();
    var latest = await store.GetLatestSequenceAsync();
    var records = (await store.GetTrainingSinceAsync(0, latest)).Concat(await store.GetHeldOutAsync(latest)).ToList();
    foreach (var r in records) Protocol.Write($"RECORD {r.Id}");
    Protocol.Write($"RECORDS {records.Count}");
    var versions = host.Services.GetRequiredService<ModelVersionStore>().ListVersions();
    Protocol.Write($"VERSIONS {string.Join(",", versions.Select(v => v.Version))}");
    Protocol.Write($"WATERMARK {await store.GetStateAsync("trained_through_sequence") ?? "0"}");
    var current = host.Services.GetRequiredService<ModelVersionStore>().GetCurrent();
    Protocol.Write($"UPTO {(current is null ? "none" : ModelVersionStore.ReadProvenance(current)?.UpToSequence.ToString(CultureInfo.InvariantCulture) ?? "none")}");
    foreach (var v in versions)
    {
        string result;
        try
        {
            using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(v.ModelPath);
            result = "ok";
        }
        catch (Exception e)
        {
            result = "error " + e.Message.ReplaceLineEndings(" ");
        }
        Protocol.Write($"LOADS {v.Version} {result}");
    }
    var root = host.Services.GetRequiredService<ModelVersionStore>().Root;
    var leftovers = Directory.EnumerateFileSystemEntries(root).Select(Path.GetFileName)
        .Where(n => n is not null && !(n.Length == 7 && n[0] == 'v') && n != ModelVersionStore.CurrentFileName && !n.StartsWith(".promotion-markers", StringComparison.Ordinal));
    Protocol.Write($"LEFTOVERS {string.Join(",", leftovers)}");
    await host.StopAsync();
    return 0;
}

var stopAfter = options.TryGetValue("stop-after-version", out var sv) ? sv : (int?)null;
var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
Task? stopping = null;
host.Services.GetRequiredService<FineTuningEvents>().RoundCompleted += (_, e) =>
{
    var version = handle.ServingVersion;
    if (e.Outcome == RoundOutcome.Promoted)
    {
        Protocol.Write($"PROBE {Show(version)} {Probe(handle)}");
        Protocol.Write($"PROMOTED {Show(version)}");
    }
    var reason = e.Error?.Message ?? string.Join("; ", e.Decision?.Reasons ?? []);
    Protocol.Write($"ROUND_COMPLETED {e.Round} {e.Outcome}{(e.Outcome == RoundOutcome.Promoted ? "" : " " + reason.ReplaceLineEndings(" "))}");
    if (e.Outcome == RoundOutcome.Promoted && version >= stopAfter)
    {
        // Cancel the background loop now, from its own thread (StopAsync returns at its first wait), so that no
        // further round can start and promote between this promotion and the exit.
        stopping = host.StopAsync();
        stop.TrySetResult();
    }
};

await host.StartAsync();
Protocol.Write($"READY {Show(handle.ServingVersion)}");
var writer = host.Services.GetRequiredService<IFeedbackWriter>();
var interval = TimeSpan.FromMilliseconds(Option("interval-ms", 10));
var maxRecords = Option("max-records", 100_000);
var rng = new Random(Option("seed", 1));
for (var i = 0; i < maxRecords && !stop.Task.IsCompleted; i++)
{
    var (x, y) = Clusters.Next(rng);
    var receipt = await writer.WriteAsync(Feedback.ForTensors(Clusters.Tensors(x), y));
    Protocol.Write($"ACCEPTED {receipt.Id}");
    await Task.Delay(interval);
}
await stop.Task;
await stopping!;
Protocol.Write("STOPPED");
return 0;

static string Show(int? version) => version?.ToString(CultureInfo.InvariantCulture) ?? "base";

static string Probe(IModelHandle handle)
{
    var rng = new Random(12345);
    var values = new List<string>();
    for (var i = 0; i < 4; i++)
    {
        var logits = handle.Predict(Clusters.Tensors(Clusters.Next(rng).X)).Outputs[Clusters.Output].FloatData!;
        values.AddRange(logits.Select(f => f.ToString("R", CultureInfo.InvariantCulture)));
    }
    return string.Join(",", values);
}

static string? TakeOption(ref string[] all, string name)
{
    var i = Array.IndexOf(all, "--" + name);
    if (i < 0 || i + 1 >= all.Length) return null;
    var value = all[i + 1];
    all = [.. all[..i], .. all[(i + 2)..]];
    return value;
}

static Dictionary<string, int> ParseOptions(ReadOnlySpan<string> rest)
{
    var map = new Dictionary<string, int>(StringComparer.Ordinal);
    for (var i = 0; i + 1 < rest.Length; i += 2)
    {
        if (!rest[i].StartsWith("--", StringComparison.Ordinal))
            throw new ArgumentException($"expected an option name, got '{rest[i]}'");
        map[rest[i][2..]] = int.Parse(rest[i + 1], CultureInfo.InvariantCulture);
    }
    return map;
}

/// <summary>Writes whole protocol lines to stdout, flushed, one writer at a time.</summary>
internal static class Protocol
{
    private static readonly Lock Gate = new();

    public static void Write(string line)
    {
        lock (Gate)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }
    }
}

/// <summary>
/// The synthetic data of OnnxTune.Hosting.Tests' <c>Clusters</c> (8 features, 4 Gaussian clusters: class k centred
/// at 3 on features 2k and 2k+1, noise σ = 0.7) for the MLP artifacts the test writes.
/// </summary>
internal static class Clusters
{
    public const int Features = 8;
    public const int Classes = 4;
    public const string Input = "features";
    public const string Output = "logits";

    public static (float[] X, int Y) Next(Random rng)
    {
        var y = rng.Next(Classes);
        var x = new float[Features];
        for (var j = 0; j < Features; j++) x[j] = (j / 2 == y ? 3f : 0f) + 0.7f * Gaussian(rng);
        return (x, y);
    }

    public static Dictionary<string, TensorData> Tensors(float[] x) => new() { [Input] = TensorData.Float(x, 1, Features) };

    private static float Gaussian(Random rng) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
}

/// <summary>
/// Sends log lines to stderr, and turns OnnxTune.Hosting's "round started" (4002) and "epoch done" (4061) events
/// into protocol lines.
/// </summary>
internal sealed class ProtocolLoggerProvider : ILoggerProvider
{
    private const int RoundStartedEventId = 4002;
    private const int EpochEventId = 4061;

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var fields = state as IReadOnlyList<KeyValuePair<string, object?>> ?? [];
            object? Field(string name) => fields.FirstOrDefault(f => f.Key == name).Value;
            if (eventId.Id == EpochEventId)
            {
                Protocol.Write($"EPOCH {Field("Round")} {Field("Epoch")}");
                return;
            }
            var text = formatter(state, exception);
            Console.Error.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} {logLevel} {category}[{eventId.Id}] {text}{(exception is null ? "" : " " + exception)}");
            if (eventId.Id == RoundStartedEventId) Protocol.Write($"ROUND_STARTED {Field("Round")}");
        }
    }
}
