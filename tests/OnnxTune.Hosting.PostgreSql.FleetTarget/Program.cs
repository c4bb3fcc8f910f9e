// One instance of a Generic Host app on a shared PostgreSQL database, started three times by
// OnnxTune.Hosting.PostgreSql.Tests' FleetTests. Arguments: <artifacts> <local-store> <connection-string> <instance>
// [--lease-ms L] [--poll-ms P] [--epochs E] [--lifetime-seconds T]. Commands on stdin, one per line:
//
//   feed <count> <seed>     writes <count> cluster records; ACCEPTED <id> after each WriteAsync returned (durable)
//   rollback <version>      ModelVersionStore.RollbackAsync; ROLLED_BACK <version> <unix-ms> (or ERROR ...)
//   exit                    graceful stop; STOPPED
//
// Protocol lines on stdout (flushed): READY <serving>, SWAPPED <version|base> <unix-ms> (every hot swap, local or
// followed), LEASE <unix-ms> (this instance took the trainer lease), ROUND_STARTED <round>, PROMOTED <version>,
// ROUND_COMPLETED <round> <outcome> [reason]. Logs go to stderr. The process ends itself after --lifetime-seconds.
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting;

var artifacts = args[0];
var store = args[1];
var connectionString = args[2];
var instance = args[3];
var options = new Dictionary<string, int>(StringComparer.Ordinal);
for (var i = 4; i + 1 < args.Length; i += 2) options[args[i].TrimStart('-')] = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
int Option(string name, int fallback) => options.TryGetValue(name, out var v) ? v : fallback;

var lifetime = TimeSpan.FromSeconds(Option("lifetime-seconds", 120));
_ = Task.Delay(lifetime).ContinueWith(_ => Environment.Exit(3), TaskScheduler.Default);

var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
builder.Logging.SetMinimumLevel(LogLevel.Information);
builder.Logging.AddProvider(new ProtocolLoggerProvider(instance));
builder.Services.AddOnDeviceFineTuning(o =>
{
    o.ArtifactsPath = artifacts;
    o.ModelStorePath = store;
    o.MinNewFeedback = 24;
    o.HeldOutShare = 0.3;
    o.MinHeldOutImprovement = 0;
    o.EpochsPerRound = Option("epochs", 20);
    o.BatchSize = 16;
    o.LearningRate = 0.01;
    o.ReplayRatio = 1;
    o.TrainingThreads = 1;
    o.InferenceThreads = 1;
    o.CheckInterval = TimeSpan.FromMilliseconds(100);
    o.MaxInterval = TimeSpan.FromHours(1);
}).UsePostgreSql(o =>
{
    o.ConnectionString = connectionString;
    o.LeaseDuration = TimeSpan.FromMilliseconds(Option("lease-ms", 3000));
    o.PollInterval = TimeSpan.FromMilliseconds(Option("poll-ms", 1000));
});
using var host = builder.Build();
var handle = host.Services.GetRequiredService<IModelHandle>();
var events = host.Services.GetRequiredService<FineTuningEvents>();
events.ModelSwapped += (_, e) => Protocol.Write($"SWAPPED {Show(e.Version)} {Now()}");
events.RoundCompleted += (_, e) =>
{
    if (e.Outcome == RoundOutcome.Promoted) Protocol.Write($"PROMOTED {Show(handle.ServingVersion)}");
    var reason = e.Error?.Message ?? string.Join("; ", e.Decision?.Reasons ?? []);
    Protocol.Write($"ROUND_COMPLETED {e.Round} {e.Outcome} {reason.ReplaceLineEndings(" ")}".TrimEnd());
};
await host.StartAsync();
Protocol.Write($"READY {Show(handle.ServingVersion)}");
var writer = host.Services.GetRequiredService<IFeedbackWriter>();
var versions = host.Services.GetRequiredService<ModelVersionStore>();
while (await Console.In.ReadLineAsync() is { } line)
{
    var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
    if (parts.Length == 0) continue;
    try
    {
        switch (parts[0])
        {
            case "feed":
                var rng = new Random(int.Parse(parts[2], CultureInfo.InvariantCulture));
                for (var i = 0; i < int.Parse(parts[1], CultureInfo.InvariantCulture); i++)
                {
                    var (x, y) = Clusters.Next(rng);
                    var receipt = await writer.WriteAsync(Feedback.ForTensors(Clusters.Tensors(x), y));
                    Protocol.Write($"ACCEPTED {receipt.Id}");
                }
                Protocol.Write("FED");
                break;
            case "rollback":
                var target = await versions.RollbackAsync(int.Parse(parts[1], CultureInfo.InvariantCulture));
                Protocol.Write($"ROLLED_BACK {target.Version} {Now()}");
                break;
            case "exit":
                await host.StopAsync();
                Protocol.Write("STOPPED");
                return 0;
        }
    }
    catch (Exception e)
    {
        Protocol.Write($"ERROR {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
    }
}
await host.StopAsync();
return 0;

static string Show(int? version) => version?.ToString(CultureInfo.InvariantCulture) ?? "base";

static string Now() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);

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

/// <summary>The hosting tests' cluster data (8 features, 4 Gaussian clusters) for the MLP artifacts the test writes.</summary>
internal static class Clusters
{
    public const int Features = 8;
    public const int Classes = 4;

    public static (float[] X, int Y) Next(Random rng)
    {
        var y = rng.Next(Classes);
        var x = new float[Features];
        for (var j = 0; j < Features; j++) x[j] = (j / 2 == y ? 3f : 0f) + 0.7f * Gaussian(rng);
        return (x, y);
    }

    public static Dictionary<string, TensorData> Tensors(float[] x) => new() { ["features"] = TensorData.Float(x, 1, Features) };

    private static float Gaussian(Random rng) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
}

/// <summary>Log lines to stderr (prefixed by the instance); round-started (4002) and lease-acquired (4090) events also become protocol lines.</summary>
internal sealed class ProtocolLoggerProvider(string instance) : ILoggerProvider
{
    public ILogger CreateLogger(string categoryName) => new Logger(instance, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(string instance, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var fields = state as IReadOnlyList<KeyValuePair<string, object?>> ?? [];
            Console.Error.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} [{instance}] {logLevel} {category}[{eventId.Id}] {formatter(state, exception)}{(exception is null ? "" : " " + exception)}");
            if (eventId.Id == 4002) Protocol.Write($"ROUND_STARTED {fields.FirstOrDefault(f => f.Key == "Round").Value}");
            if (eventId.Id == 4090) Protocol.Write($"LEASE {DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}");
        }
    }
}
