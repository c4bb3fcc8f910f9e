using Microsoft.Extensions.Logging;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests;

/// <summary>
/// Test double for the training engine: writes a y = x·W + b candidate favouring one class (or throws, or waits
/// for cancellation) into the round's working directory. It trains nothing.
/// </summary>
internal sealed class ScriptedRound : IFineTuningRound
{
    public Queue<Func<FineTuningRoundInput, CancellationToken, Task<int>>> Script { get; } = new();
    public List<FineTuningRoundInput> Inputs { get; } = [];

    public void Then(int favouredClass) => Script.Enqueue((_, _) => Task.FromResult(favouredClass));

    public void ThenThrow(string message) => Script.Enqueue((_, _) => throw new InvalidOperationException(message));

    public async Task<FineTuningRoundResult> RunAsync(FineTuningRoundInput input, CancellationToken cancellationToken)
    {
        Inputs.Add(input);
        var favoured = await Script.Dequeue()(input, cancellationToken);
        var (w, b) = TestModels.Biased(favoured);
        var model = Path.Combine(input.WorkingDirectory, "candidate.onnx");
        TestModels.WriteLinear(model, w, b);
        var ckpt = Directory.CreateDirectory(Path.Combine(input.WorkingDirectory, "checkpoint")).FullName;
        File.WriteAllText(Path.Combine(ckpt, "checkpoint.json"), $"{{\"favoured\":{favoured}}}");
        return new FineTuningRoundResult(model, ckpt, 0.25, 3);
    }
}

internal sealed class Harness : IAsyncDisposable
{
    private Harness(IHost host, FakeTimeProvider time, string name)
    {
        Host = host;
        Time = time;
        Name = name;
    }

    public IHost Host { get; }
    public FakeTimeProvider Time { get; }
    public string Name { get; }
    public IModelHandle Handle => Host.Services.GetRequiredKeyedService<IModelHandle>(Name);
    public IFeedbackWriter Writer => Host.Services.GetRequiredKeyedService<IFeedbackWriter>(Name);
    public IFeedbackStore Store => Host.Services.GetRequiredKeyedService<IFeedbackStore>(Name);
    public ModelVersionStore Versions => Host.Services.GetRequiredKeyedService<ModelVersionStore>(Name);
    public IFineTuningAdmin Admin => Host.Services.GetRequiredKeyedService<IFineTuningAdmin>(Name);
    public FineTunedModel Model => Host.Services.GetRequiredKeyedService<FineTunedModel>(Name);
    public FineTuningEvents Events => Host.Services.GetRequiredService<FineTuningEvents>();
    public FineTuningBackgroundService Service => Host.Services.GetServices<IHostedService>().OfType<FineTuningBackgroundService>().Single();

    internal const string HeldOutTestKey = "6f6e6e7874756e652d746573742d68656c642d6f75742d6b65792d3030303031";

    public static OnDeviceFineTuningOptions Defaults(TempDir dir) => new()
    {
        ArtifactsPath = dir.Sub("artifacts"),
        ModelStorePath = dir.Sub("store"),
    };

    public static async Task<Harness> StartAsync(TempDir dir, IFineTuningRound? round, Action<OnDeviceFineTuningOptions>? configure = null, string name = "", FakeTimeProvider? time = null,
        TimeProvider? clock = null, Action<IServiceCollection>? services = null)
    {
        if (!Directory.Exists(dir.Sub("artifacts"))) TestModels.WriteArtifacts(dir.Sub("artifacts"), favouredClass: 0);
        time ??= new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 0, 0, 0, TimeSpan.Zero));
        var builder = Microsoft.Extensions.Hosting.Host.CreateEmptyApplicationBuilder(new());
        builder.Services.AddSingleton<TimeProvider>(clock ?? time);
        services?.Invoke(builder.Services);
        if (Environment.GetEnvironmentVariable("ONNXTUNE_TEST_LOG") == "1") builder.Logging.AddConsole();
        builder.Services.AddOnDeviceFineTuning(name, o =>
        {
            o.ArtifactsPath = dir.Sub("artifacts");
            o.ModelStorePath = dir.Sub("store");
            o.MinNewFeedback = 8;
            o.HeldOutShare = 0.3;
            o.CheckInterval = TimeSpan.FromSeconds(1);
            o.MinHeldOutImprovement = 0.01;
            configure?.Invoke(o);
        });
        if (round is not null) builder.Services.AddKeyedSingleton<IFineTuningRound>(name, round);
        var host = builder.Build();
        await host.StartAsync();
        // A fixed held-out key makes the split of the seeded test inputs, and so every gate decision, reproducible.
        // With the store's random key a round sometimes held out one or two records: too few for any candidate to pass.
        var store = host.Services.GetRequiredKeyedService<IFeedbackStore>(name);
        if (string.IsNullOrEmpty(await store.GetStateAsync(HeldOutSecret.StateKey)))
            await store.SetStateAsync(HeldOutSecret.StateKey, HeldOutTestKey);
        return new Harness(host, time, name);
    }

    public async Task WriteFeedbackAsync(int count, int label, int seed, string? user = null)
    {
        var rng = new Random(seed);
        for (var i = 0; i < count; i++)
            await Writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TestModels.X(rng)), label, user));
    }

    /// <summary>Advances fake time until the next round completes (a hang guard: real-time limit 180 s, for shared CI machines).</summary>
    public async Task<RoundCompletedEventArgs> NextRoundAsync()
    {
        var tcs = new TaskCompletionSource<RoundCompletedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        EventHandler<RoundCompletedEventArgs> handler = (_, e) => tcs.TrySetResult(e);
        Events.RoundCompleted += handler;
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(180);
            while (!tcs.Task.IsCompleted)
            {
                Assert.True(DateTime.UtcNow < deadline, "no round completed within 180 s");
                Time.Advance(TimeSpan.FromSeconds(1));
                await Task.WhenAny(tcs.Task, Task.Delay(20));
            }
            return await tcs.Task;
        }
        finally
        {
            Events.RoundCompleted -= handler;
        }
    }

    /// <summary>Asserts a round's outcome; a mismatch names the gate's reasons or the round's error.</summary>
    public static void AssertOutcome(RoundOutcome expected, RoundCompletedEventArgs e) =>
        Assert.True(e.Outcome == expected,
            $"expected {expected}, got {e.Outcome}: {(e.Decision is { } d ? string.Join("; ", d.Reasons) : e.Error?.Message)}");

    public int PredictedClass()
    {
        var y = Handle.Predict(TestModels.Input(TensorData.Float([0.1f, 0.2f, 0.3f, 0.4f], 1, 4))).Outputs["y"].FloatData!;
        return Array.IndexOf(y, y.Max());
    }

    public async ValueTask DisposeAsync()
    {
        await Host.StopAsync();
        Host.Dispose();
    }
}
