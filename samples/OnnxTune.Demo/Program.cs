using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxTune.Demo;
using OnnxTune.Hosting;
using OnnxTune.Samples;

// OnnxTune demo: an intent classifier — all-MiniLM-L6-v2 with a head, its top two encoder layers trainable — that
// keeps learning from its users' corrections on the device. The shipped model knows 5 of CLINC150's 10 domains;
// the other 5 launch one after another, users correct predictions (Feedback.ForText), and AddOnDeviceFineTuning's
// background service fine-tunes the encoder and head on each wave plus a replay sample, gates every candidate and
// hot-swaps it in. Halfway through a buggy client sends random labels: the gate rejects that round and the app
// deletes the client's records.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
return await DemoCommandLine.InvokeAsync(args, RunAsync);

static async Task<int> RunAsync(DemoSettings settings)
{
    var wall = Stopwatch.StartNew();
    var report = new DemoReport(settings);
    var outDir = Path.GetFullPath(settings.OutDir ?? Path.Combine(Clinc150.RepoRoot(), "artifacts", "demo"));

    // 1. Data: which domains the shipped model knows, and what users will later teach it.
    var data = Clinc150.Load(Clinc150.Locate());
    var story = DemoData.Create(data, settings);
    report.Data(data, story);

    // 2. Offline, before shipping: artifacts from MiniLM + head, trained on the known intents (cached across runs).
    var sw = Stopwatch.StartNew();
    var (artifacts, trained, reused) = EncoderIntentModel.Prepare(Path.Combine(outDir, "model"), data.Intents, story.BaseTraining,
        new EncoderIntentSettings { TrainableLayers = settings.TrainableLayers }, line => Console.WriteLine("  " + line));
    report.ShippedModel(story.BaseTraining.Count, reused, sw.Elapsed);
    var goldenPath = Path.Combine(outDir, "golden.jsonl");
    DemoData.WriteGoldenSet(goldenPath, story.Golden);
    var storePath = Path.Combine(outDir, "store");
    if (Directory.Exists(storePath)) Directory.Delete(storePath, recursive: true); // every run tells the story from the start

    // 3. The app: one registration. Everything else is the library's defaults.
    var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = [] });
    builder.Logging.SetMinimumLevel(LogLevel.Warning);
    builder.Services.AddOnDeviceFineTuning(o =>
    {
        o.ArtifactsPath = artifacts;          // training graphs (from onnxtune artifacts)
        o.TrainedModelPath = trained;         // the model trained offline, with its replay set (from onnxtune train --out)
        o.ModelStorePath = storePath;         // versions + SQLite feedback
        o.GoldenSetPath = goldenPath;         // known-intent utterances no candidate may get worse on
        o.MinNewFeedback = settings.WaveSize; // one round per wave
        o.CheckInterval = TimeSpan.FromMilliseconds(100);
        o.TrainingThreads = 2;                // the demo predicts only between rounds; an app keeps the default 1
        if (settings.DistillationWeight is { } kd) o.DistillationWeight = kd;                 // ablation knobs only
        if (settings.EncoderLearningRateScale is { } scale) o.EncoderLearningRateScale = scale;
        if (settings.BaseReplayShare is { } share) o.BaseReplayShare = share;
        o.UsePrefixCache = settings.PrefixCache;
    });
    using var host = builder.Build();
    var classifier = host.Services.GetRequiredService<ITextClassifier>();
    var writer = host.Services.GetRequiredService<IFeedbackWriter>();
    var store = host.Services.GetRequiredService<IFeedbackStore>();
    var events = host.Services.GetRequiredService<FineTuningEvents>();
    TaskCompletionSource<RoundCompletedEventArgs>? pendingRound = null;
    events.RoundCompleted += (_, e) => pendingRound?.TrySetResult(e);
    events.ModelSwapped += (_, e) => report.Swapped(e);
    await host.StartAsync();

    double Accuracy(IReadOnlyList<Utterance> test) => (double)test.Count(u => classifier.Predict(u.Text).Label == u.Intent) / test.Count;
    report.Start(Accuracy(story.TestKnown), Accuracy(story.TestNew));

    // 4. Feedback arrives in waves; each wave's last training record crosses MinNewFeedback and starts one round.
    foreach (var wave in story.Waves)
    {
        pendingRound = new TaskCompletionSource<RoundCompletedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        var training = 0;
        var heldOut = 0;
        foreach (var (text, intent, user) in wave.Records)
        {
            if (training == settings.WaveSize) break;
            var receipt = await writer.WriteAsync(Feedback.ForText(text, intent, user));
            if (receipt.HeldOut) heldOut++;
            else training++;
        }
        var round = await pendingRound.Task.WaitAsync(TimeSpan.FromMinutes(60)); // a hang guard only: rounds take seconds on an idle machine
        report.Round(wave, training, heldOut, round, Accuracy(story.TestKnown), Accuracy(story.TestNew), classifier.Predict("hello").Version);
        report.RoundParts(round);
        if (wave.Poisoned)
            report.Deleted(await store.DeleteUserAsync(DemoData.BuggyClient));
    }
    await host.StopAsync();

    foreach (var text in new[] { "what's the exchange rate from dollars to yen", "set an alarm for 6 am", "please transfer $200 from checking to savings" })
        report.Example(text, classifier.Predict(text));
    return report.Summary(wall.Elapsed) ? 0 : 1;
}
