using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxTune.Hosting;
using OnnxTune.Samples;

namespace OnnxTune.Benchmarks.Encoder;

/// <summary>One hosted round (a W5 JSON line): wall time from the trigger to the swap, and where it went.</summary>
internal sealed record W5Result
{
    public string Mode { get; init; } = "w5";
    public int Round { get; init; }
    public string Outcome { get; init; } = "";
    public int NewRecords { get; init; }
    public int ReplayRecords { get; init; }
    public int HeldOutRecords { get; init; }
    public long Steps { get; init; }
    /// <summary><c>IFineTuningAdmin.RunRoundAsync</c>, call to return (the swap happens before it returns).</summary>
    public double RoundSeconds { get; init; }
    /// <summary><c>RoundCompletedEventArgs.Duration</c>.</summary>
    public double DurationSeconds { get; init; }
    public double EncodeSeconds { get; init; }
    public double TeacherSeconds { get; init; }
    public double PrefixCacheSeconds { get; init; }
    public double TrainSeconds { get; init; }
    public double ExportSeconds { get; init; }
    public double GateSeconds { get; init; }
    public double PromotionSeconds { get; init; }
    /// <summary><c>ModelSwappedEventArgs.SwapDuration</c> (part of the promotion), 0 when not promoted.</summary>
    public double SwapSeconds { get; init; }
    public int PrefixCacheComputed { get; init; }
    public int PrefixCacheReused { get; init; }
    public double PeakRssMb { get; init; }
    public int TrainingThreads { get; init; }
}

/// <summary>
/// W5: the demo's app setup through the public hosting API — AddOnDeviceFineTuning on a shipped MiniLM + head
/// (trained offline on 5 of CLINC150's 10 domains, with its replay set), library defaults except TrainingThreads = 2
/// and no automatic trigger — then per round N text records (half about the known domains, half new) through
/// IFeedbackWriter and one IFineTuningAdmin.RunRoundAsync, timed from the call to its return.
/// </summary>
internal static class W5HostedRound
{
    private const int KnownDomains = 5;
    private const int BasePerIntent = 40;
    private const int GoldenPerIntent = 4;

    public static async Task<int> RunAsync(string work, int rounds, int records, int threads)
    {
        var data = Clinc150.Load(Clinc150.Locate());
        var known = data.Domains.Take(KnownDomains).SelectMany(d => d.Intents).ToHashSet(StringComparer.Ordinal);
        var byIntent = data.Train.GroupBy(u => u.Intent, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        var baseTraining = known.SelectMany(i => byIntent[i].Take(BasePerIntent)).ToList();
        var golden = known.SelectMany(i => byIntent[i].Skip(BasePerIntent).Take(GoldenPerIntent)).ToList();
        var rng = new Random(5);
        var knownPool = Shuffled(rng, known.SelectMany(i => byIntent[i].Skip(BasePerIntent + GoldenPerIntent)));
        var newPool = Shuffled(rng, data.Intents.Where(i => !known.Contains(i)).SelectMany(i => byIntent[i]));

        var clock = Stopwatch.StartNew();
        var (artifacts, trained, reused) = EncoderIntentModel.Prepare(Path.Combine(work, "model"), data.Intents, baseTraining, new EncoderIntentSettings(),
            line => Console.Error.WriteLine("[w5] shipped model: " + line));
        Console.Error.WriteLine($"[w5] shipped model {(reused ? "reused" : "built")} ({clock.Elapsed.TotalSeconds:F0} s): {baseTraining.Count} utterances of {known.Count} intents");
        var goldenPath = Path.Combine(work, "golden.jsonl");
        File.WriteAllLines(goldenPath, golden.Select(u => JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = u.Text, ["label"] = u.Intent })));
        var store = Path.Combine(work, "store");
        if (Directory.Exists(store)) Directory.Delete(store, recursive: true);

        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = [] });
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddOnDeviceFineTuning(o =>
        {
            o.ArtifactsPath = artifacts;
            o.TrainedModelPath = trained;
            o.ModelStorePath = store;
            o.GoldenSetPath = goldenPath;
            o.TrainingThreads = threads;
            // Rounds start only from RunRoundAsync, so the timer measures exactly one round.
            o.MinNewFeedback = 10_000_000; // the largest value options validation accepts
            o.MaxInterval = TimeSpan.FromDays(365);
        });
        using var host = builder.Build();
        var writer = host.Services.GetRequiredService<IFeedbackWriter>();
        var admin = host.Services.GetRequiredService<IFineTuningAdmin>();
        var events = host.Services.GetRequiredService<FineTuningEvents>();
        TimeSpan swap = TimeSpan.Zero;
        events.ModelSwapped += (_, e) => swap = e.SwapDuration;
        await host.StartAsync();

        int nextKnown = 0, nextNew = 0;
        for (var round = 1; round <= rounds; round++)
        {
            var training = 0;
            var heldOut = 0;
            while (training < records)
            {
                var u = training % 2 == 0 ? newPool[nextNew++ % newPool.Count] : knownPool[nextKnown++ % knownPool.Count];
                var receipt = await writer.WriteAsync(Feedback.ForText(u.Text, u.Intent, $"user-{(nextKnown + nextNew) % 50}"));
                if (receipt.HeldOut) heldOut++;
                else training++;
            }
            swap = TimeSpan.Zero;
            Peak.Reset();
            var sw = Stopwatch.StartNew();
            var done = await admin.RunRoundAsync() ?? throw new InvalidOperationException($"Round {round} did not run (no new feedback?).");
            var elapsed = sw.Elapsed;
            if (done.Outcome == RoundOutcome.Failed) throw new InvalidOperationException($"Round {round} failed.", done.Error);
            var st = done.Statistics;
            var result = new W5Result
            {
                Round = round,
                Outcome = done.Outcome.ToString(),
                NewRecords = st.NewRecords,
                ReplayRecords = st.ReplayRecords,
                HeldOutRecords = heldOut,
                Steps = st.Steps,
                RoundSeconds = elapsed.TotalSeconds,
                DurationSeconds = done.Duration.TotalSeconds,
                EncodeSeconds = st.EncodeTime.TotalSeconds,
                TeacherSeconds = st.TeacherTime.TotalSeconds,
                PrefixCacheSeconds = st.PrefixCacheTime.TotalSeconds,
                TrainSeconds = st.TrainTime.TotalSeconds,
                ExportSeconds = st.ExportTime.TotalSeconds,
                GateSeconds = st.GateTime.TotalSeconds,
                PromotionSeconds = st.PromotionTime.TotalSeconds,
                SwapSeconds = swap.TotalSeconds,
                PrefixCacheComputed = st.PrefixCacheComputed,
                PrefixCacheReused = st.PrefixCacheReused,
                PeakRssMb = Peak.Megabytes(),
                TrainingThreads = threads,
            };
            Console.WriteLine(JsonSerializer.Serialize(result, W4Result.Json));
            Console.Error.WriteLine($"[w5] round {round}: {result.Outcome}, {result.RoundSeconds:F1} s ({st.NewRecords} new + {st.ReplayRecords} replayed, {st.Steps} steps)");
        }
        await host.StopAsync();
        return 0;
    }

    private static List<Utterance> Shuffled(Random rng, IEnumerable<Utterance> items)
    {
        var a = items.ToArray();
        rng.Shuffle(a);
        return [.. a];
    }
}
