using Microsoft.Extensions.DependencyInjection;
using OnnxTune.Hosting.Tests.Text;
using Xunit.Abstractions;

namespace OnnxTune.Hosting.Tests.Personalization;

/// <summary>
/// Per-tenant adapters on real MiniLM: tenants that label the same utterances differently each get their own
/// convention through a LoRA adapter served by ONNX Runtime's adapter API, while the shared model keeps its own.
/// </summary>
[Collection(TextModelCollection.Name)]
public sealed class PersonalizationTests(TextModelFixture model, ITestOutputHelper output) : IDisposable
{
    // Tenant conventions over the fixture's intents (alarm, translate, weather): acme swaps alarm and weather,
    // globex rotates all three. Both conflict with the shared labels and with each other.
    private static readonly Dictionary<string, Dictionary<string, string>> Conventions = new(StringComparer.Ordinal)
    {
        ["acme"] = new() { ["alarm"] = "weather", ["translate"] = "translate", ["weather"] = "alarm" },
        ["globex"] = new() { ["alarm"] = "translate", ["translate"] = "weather", ["weather"] = "alarm" },
    };

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private Task<Harness> StartAsync(Action<OnDeviceFineTuningOptions>? configure = null) => Harness.StartAsync(_dir, round: null, o =>
    {
        o.ArtifactsPath = model.ArtifactsPath;
        // The shipped model's training data: adapter rounds rehearse the classes a tenant does not relabel from it.
        o.ReplaySetPath = ReplaySet();
        o.MinNewFeedback = 10;
        o.HeldOutShare = 0.2;
        o.MinHeldOutImprovement = 0;
        o.GoldenSetPath = model.GoldenSetPath;
        o.EpochsPerRound = 4;
        o.BatchSize = 8;
        o.LearningRate = 0.01;
        o.ReplayRatio = 0;
        // The shared gate's held-out comparison on 5-10 random records rejects even better candidates; the golden set
        // (the whole common test set here) still guards the shared model, which is what these tests rely on.
        o.Gate.HeldOutMargin = 1.0;
        o.Personalization.Enabled = true;
        o.Personalization.MinNewFeedback = 5;
        configure?.Invoke(o);
    });

    private string ReplaySet()
    {
        var path = _dir.Sub("replay.jsonl");
        if (!File.Exists(path))
            File.WriteAllLines(path, model.Train.Select(e => System.Text.Json.JsonSerializer.Serialize(new { text = e.Text, label = e.Label })));
        return path;
    }

    private static double Accuracy(ITextClassifier classifier, IEnumerable<(string Text, string Label)> examples, string? key)
    {
        var list = examples.ToList();
        var map = key is null ? null : Conventions[key];
        return list.Count(e => classifier.Predict(e.Text, key).Label == (map?[e.Label] ?? e.Label)) / (double)list.Count;
    }

    /// <summary>
    /// The shared model's first round on the 30 common records; the gate judges it on a held-out split drawn by the
    /// store's random secret, so after a rejection the records are sent again and a new round runs (at most 3).
    /// </summary>
    private async Task<RoundCompletedEventArgs?> SharedRoundAsync(Harness h)
    {
        var round = await h.Admin.RunRoundAsync();
        for (var attempt = 1; attempt < 3 && round?.Outcome != RoundOutcome.Promoted; attempt++)
        {
            output.WriteLine($"shared round {attempt}: {round?.Outcome}: {string.Join("; ", round?.Decision?.Reasons ?? [])}");
            foreach (var (text, label) in model.Train) await h.Writer.WriteAsync(Feedback.ForText(text, label));
            round = await h.Admin.RunRoundAsync();
        }
        return round;
    }

    /// <summary>
    /// An adapter round for a tenant; the gate compares on the few held-out records the store's random secret picks, so
    /// a rejected round is run again (a new attempt trains with another seed), at most 3 times.
    /// </summary>
    private async Task<AdapterRoundCompletedEventArgs?> AdapterRoundAsync(IPersonalizationAdmin admin, string key)
    {
        var round = await admin.RunRoundAsync(key);
        for (var attempt = 1; attempt < 3 && round?.Outcome == RoundOutcome.Rejected; attempt++)
        {
            output.WriteLine($"{key} adapter round {attempt}: {string.Join("; ", round.Reasons)}");
            round = await admin.RunRoundAsync(key);
        }
        return round;
    }

    [Fact]
    public async Task Tenants_with_conflicting_conventions_each_reach_their_own_and_the_shared_model_holds()
    {
        var h = await StartAsync();
        try
        {
            var classifier = h.Host.Services.GetRequiredKeyedService<ITextClassifier>(h.Name);
            var admin = h.Host.Services.GetRequiredKeyedService<IPersonalizationAdmin>(h.Name);

            // The shared model learns the common convention first.
            foreach (var (text, label) in model.Train) await h.Writer.WriteAsync(Feedback.ForText(text, label));
            var shared = await SharedRoundAsync(h);
            Assert.True(shared?.Outcome == RoundOutcome.Promoted, $"shared round: {shared?.Outcome} {shared?.Error} {string.Join("; ", shared?.Decision?.Reasons ?? [])}");
            var sharedBefore = Accuracy(classifier, model.Test, null);

            // Each tenant relabels the same utterances its own way; acme's records come from a user who later leaves.
            foreach (var (key, map) in Conventions)
                foreach (var (text, label) in model.Train)
                    await h.Writer.WriteAsync(new Feedback { Text = text, Label = map[label], PartitionKey = key, UserId = key == "acme" ? "leaver" : null });

            foreach (var key in Conventions.Keys)
            {
                var e = await AdapterRoundAsync(admin, key);
                Assert.NotNull(e);
                output.WriteLine($"{key}: {e.Outcome} in {e.Duration.TotalSeconds:F1} s, held-out {e.SharedHeldOutAccuracy:P0} -> {e.CandidateHeldOutAccuracy:P0}, " +
                    $"golden {e.SharedGoldenAccuracy:P0} -> {e.CandidateGoldenAccuracy:P0}, losses {string.Join(" ", e.Statistics.EpochLosses.Select(l => l.ToString("F3")))} {string.Join("; ", e.Reasons)}");
                Assert.True(e.Outcome == RoundOutcome.Promoted, $"{key}: {e.Outcome}: {string.Join("; ", e.Reasons)}");
                Assert.Equal(1, e.Adapter!.Version);
                Assert.True(e.Adapter.SizeBytes < 100_000, $"adapter {e.Adapter.SizeBytes} bytes");
            }
            foreach (var key in Conventions.Keys)
            {
                var own = Accuracy(classifier, model.Test, key);
                output.WriteLine($"{key}: {own:P1} on its own convention (30 test texts)");
                Assert.True(own >= 0.9, $"{key}: {own:P1} on its own convention");
                Assert.Equal(1, classifier.Predict(model.Test[0].Text, key).AdapterVersion);
            }
            // Keys without an adapter, and calls without a key, get the shared model.
            Assert.Null(classifier.Predict(model.Test[0].Text, "initech").AdapterVersion);
            Assert.Null(classifier.Predict(model.Test[0].Text).AdapterVersion);
            var sharedAfterAdapters = Accuracy(classifier, model.Test, null);
            Assert.Equal(sharedBefore, sharedAfterAdapters);

            // A shared round over all feedback (tenant records included) must not cost the shared model its convention.
            var mixed = await h.Admin.RunRoundAsync();
            var sharedAfter = Accuracy(classifier, model.Test, null);
            output.WriteLine($"shared: {sharedBefore:P1} -> {sharedAfter:P1} after a round over all feedback ({mixed?.Outcome}: {string.Join("; ", mixed?.Decision?.Reasons ?? [])})");
            Assert.True(sharedAfter >= sharedBefore - 0.01, $"shared accuracy {sharedBefore:P1} -> {sharedAfter:P1}");
            if (mixed?.Outcome == RoundOutcome.Promoted)
                Assert.All(Conventions.Keys, k => Assert.False(admin.GetAdapter(k)!.MatchesServingModel));

            // Deleting a user deletes the adapters trained on their records; predictions for the key fall back.
            var deletion = await h.Admin.DeleteUserAsync("leaver");
            Assert.Equal(1, deletion.DeletedAdapters);
            Assert.Null(admin.GetAdapter("acme"));
            Assert.Null(classifier.Predict(model.Test[0].Text, "acme").AdapterVersion);
            Assert.NotNull(admin.GetAdapter("globex"));
        }
        finally
        {
            await h.DisposeAsync();
        }
    }

    [Fact]
    public async Task An_adapter_is_never_applied_to_another_base_and_is_retrained_rolled_back_and_reloaded_after_restart()
    {
        // No replay set: this test retrains on the untrained base model, whose scores would be a meaningless teacher.
        // Nor a golden bound: on that base the shared model scores ~10% on 20 golden records, so one record decides
        // (CI saw 10% -> 0% reject a retrained adapter); the test is about the adapter's base binding, not that gate.
        var h = await StartAsync(o =>
        {
            o.ReplaySetPath = null;
            o.Personalization.MaxLoadedAdapterBytes = 1;
            o.Personalization.MaxGoldenDrop = 1.0;
        });
        try
        {
            var classifier = h.Host.Services.GetRequiredKeyedService<ITextClassifier>(h.Name);
            var admin = h.Host.Services.GetRequiredKeyedService<IPersonalizationAdmin>(h.Name);
            foreach (var (text, label) in model.Train) await h.Writer.WriteAsync(Feedback.ForText(text, label));
            Assert.Equal(RoundOutcome.Promoted, (await SharedRoundAsync(h))!.Outcome);
            foreach (var (key, map) in Conventions)
                foreach (var (text, label) in model.Train)
                    await h.Writer.WriteAsync(new Feedback { Text = text, Label = map[label], PartitionKey = key });
            foreach (var key in Conventions.Keys) Assert.Equal(RoundOutcome.Promoted, (await AdapterRoundAsync(admin, key))!.Outcome);

            // The load budget holds one adapter: serving both keys keeps only the last loaded.
            Assert.Equal(1, classifier.Predict(model.Test[0].Text, "acme").AdapterVersion);
            Assert.Equal(1, classifier.Predict(model.Test[0].Text, "globex").AdapterVersion);
            Assert.Equal(1, h.Model.Adapters!.LoadedCount);

            // The shared version the adapters were trained on stops serving: they are not applied to the base model.
            await h.Admin.RetireVersionAsync(1, "test");
            Assert.Null(h.Handle.ServingVersion);
            Assert.Null(classifier.Predict(model.Test[0].Text, "acme").AdapterVersion);
            Assert.False(admin.GetAdapter("acme")!.MatchesServingModel);

            // The background loop retrains both on the model that serves now.
            var retrained = new List<AdapterRoundCompletedEventArgs>();
            EventHandler<AdapterRoundCompletedEventArgs> record = (_, e) => retrained.Add(e);
            h.Events.AdapterRoundCompleted += record;
            await h.Service.RunDueAdapterRoundsAsync(CancellationToken.None);
            h.Events.AdapterRoundCompleted -= record;
            foreach (var e in retrained)
                output.WriteLine($"{e.PartitionKey}: {e.Outcome}, held-out {e.SharedHeldOutAccuracy:P0} -> {e.CandidateHeldOutAccuracy:P0}, golden {e.SharedGoldenAccuracy:P0} -> {e.CandidateGoldenAccuracy:P0}; {string.Join("; ", e.Reasons)}");
            Assert.Equal(2, retrained.Count);
            foreach (var key in Conventions.Keys)
            {
                var info = admin.GetAdapter(key)!;
                Assert.True(info.MatchesServingModel, $"{key}: {string.Join("; ", retrained.Single(e => e.PartitionKey == key).Reasons)}");
                Assert.Equal(2, info.Version);
                Assert.Null(info.BaseModelVersion);
                Assert.Equal(2, classifier.Predict(model.Test[0].Text, key).AdapterVersion);
            }
            // Nothing new: nothing is due.
            var rounds = 0;
            h.Events.AdapterRoundCompleted += (_, _) => rounds++;
            await h.Service.RunDueAdapterRoundsAsync(CancellationToken.None);
            Assert.Equal(0, rounds);

            // Rollback serves version 1 again, which belongs to the retired shared version: the key gets the shared model.
            var back = await admin.RollbackAsync("acme");
            Assert.Equal(1, back!.Version);
            Assert.False(back.MatchesServingModel);
            Assert.Null(classifier.Predict(model.Test[0].Text, "acme").AdapterVersion);
        }
        finally
        {
            await h.DisposeAsync();
        }

        // Adapters are durable: a restarted host serves them without retraining.
        var again = await StartAsync(o => o.ReplaySetPath = null);
        try
        {
            var classifier = again.Host.Services.GetRequiredKeyedService<ITextClassifier>(again.Name);
            var own = Accuracy(classifier, model.Test, "globex");
            Assert.True(own >= 0.9, $"globex after restart: {own:P1}");
            Assert.Equal(2, classifier.Predict(model.Test[0].Text, "globex").AdapterVersion);
        }
        finally
        {
            await again.DisposeAsync();
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("tenant\n1")]
    public async Task Bad_partition_keys_are_refused_by_name(string key)
    {
        var h = await StartAsync();
        try
        {
            var e = await Assert.ThrowsAsync<FeedbackValidationException>(() =>
                h.Writer.WriteAsync(new Feedback { Text = "wake me up", Label = "alarm", PartitionKey = key }).AsTask());
            Assert.Equal(FeedbackErrorKind.InvalidPartitionKey, e.Kind);
            Assert.Equal("PartitionKey", e.Field);
        }
        finally
        {
            await h.DisposeAsync();
        }
    }
}
