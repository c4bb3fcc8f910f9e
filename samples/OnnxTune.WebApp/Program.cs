using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using OnnxTune;
using OnnxTune.Hosting;
using OnnxTune.Samples;

// OnnxTune web sample: an intent API whose model improves from its users' corrections.
// /predict embeds the text with all-MiniLM-L6-v2 and runs the hot-swapped intent head (IModelHandle);
// /feedback stores a correction (IFeedbackWriter); background rounds fine-tune, gate and swap in new versions;
// /models lists versions and decisions and rolls back; /health is the hosting health check.
//   dotnet run --project samples/OnnxTune.WebApp -- --urls http://127.0.0.1:5080
var builder = WebApplication.CreateBuilder(args);
var outDir = Path.GetFullPath(builder.Configuration["OutDir"] ?? Path.Combine(Clinc150.RepoRoot(), "artifacts", "webapp"));
var artifactsDir = Path.Combine(outDir, "artifacts");
var storeDir = Path.Combine(outDir, "store");
var goldenPath = Path.Combine(outDir, "golden.jsonl");

// The shipped model: CLINC150's first 5 domains; the other 5 are for users to teach it.
var data = Clinc150.Load(Clinc150.Locate());
var knownDomains = data.Domains.Take(5).Select(d => d.Domain).ToHashSet(StringComparer.Ordinal);
var embedder = new SentenceEmbedder();
var firstStart = !File.Exists(Path.Combine(artifactsDir, "manifest.json"));
if (firstStart)
{
    Console.WriteLine("First start: training the shipped intent model on the known domains (embeddings are cached under artifacts/)...");
    var known = Clinc150.Take(data.Train, 40).Where(u => knownDomains.Contains(data.DomainOf[u.Intent])).ToList();
    var x = IntentHead.EmbedCached(Path.Combine(outDir, "embeddings-known.safetensors"), known.Select(u => u.Text).ToList(), () => embedder);
    var labelOf = data.Intents.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => (long)p.i, StringComparer.Ordinal);
    IntentHead.PretrainAndBuildArtifacts(artifactsDir, data.Intents, x, known.Select(u => labelOf[u.Intent]).ToArray(), epochs: 20, learningRate: 1e-2);
    // Golden set shipped with the app: unseen known-domain utterances; a candidate may not lose more than GoldenTolerance on them.
    var golden = data.Train.GroupBy(u => u.Intent, StringComparer.Ordinal).Where(g => knownDomains.Contains(data.DomainOf[g.Key]))
        .SelectMany(g => g.Skip(40).Take(4)).ToList();
    IntentHead.WriteGoldenSet(goldenPath,
        IntentHead.EmbedCached(Path.Combine(outDir, "embeddings-golden.safetensors"), golden.Select(u => u.Text).ToList(), () => embedder),
        golden.Select(u => u.Intent).ToList());
}

builder.Services.AddSingleton(embedder);
builder.Services.AddSingleton<RoundLog>();
builder.Services.AddOnDeviceFineTuning(o =>
{
    o.ArtifactsPath = artifactsDir;
    o.ModelStorePath = storeDir;
    o.GoldenSetPath = goldenPath;
    o.TrainingThreads = 1;
}).BindConfiguration(); // section "OnDeviceFineTuning" in appsettings.json overrides the code defaults

var app = builder.Build();
var log = app.Services.GetRequiredService<RoundLog>();
var events = app.Services.GetRequiredService<FineTuningEvents>();
events.RoundCompleted += (_, e) => log.Add(e);
events.ModelSwapped += (_, e) => log.LastSwapMs = e.SwapDuration.TotalMilliseconds;

if (firstStart)
{
    // A little logged feedback from the known domains, as an app that has been live for a while would have:
    // it gives the gate held-out records to compare on and the rounds something to replay against forgetting.
    var writer = app.Services.GetRequiredService<IFeedbackWriter>();
    var seed = Clinc150.Take(data.Train, 42).Where(u => knownDomains.Contains(data.DomainOf[u.Intent])).GroupBy(u => u.Intent).SelectMany(g => g.Skip(40)).ToList();
    var seedX = embedder.EmbedAll(seed.Select(u => u.Text).ToList());
    for (var i = 0; i < seed.Count; i++)
        await writer.WriteAsync(new Feedback
        {
            Tensors = new Dictionary<string, TensorData> { [IntentHead.InputName] = TensorData.Float(seedX.AsSpan(i * SentenceEmbedder.Dimension, SentenceEmbedder.Dimension).ToArray(), 1, SentenceEmbedder.Dimension) },
            Label = seed[i].Intent,
            UserId = "seed",
            Metadata = new Dictionary<string, string> { ["text"] = seed[i].Text },
        });
}

app.UseDefaultFiles();
app.UseStaticFiles();

app.MapGet("/intents", () => data.Domains.Select(d => new { domain = d.Domain, known = knownDomains.Contains(d.Domain), intents = d.Intents }));

app.MapPost("/predict", (PredictRequest request, SentenceEmbedder embed, IModelHandle model) =>
{
    if (string.IsNullOrWhiteSpace(request.Text) || request.Text.Length > 1000)
        return Results.BadRequest(new { error = "text must be 1 to 1000 characters" });
    var sw = Stopwatch.StartNew();
    var x = embed.Embed(request.Text);
    var output = model.Predict(new Dictionary<string, TensorData> { [IntentHead.InputName] = TensorData.Float(x, 1, SentenceEmbedder.Dimension) });
    var logits = output.Outputs[IntentHead.OutputName].FloatData!;
    var max = logits.Max();
    var exp = logits.Select(v => Math.Exp(v - max)).ToArray();
    var sum = exp.Sum();
    var top = exp.Select((p, i) => (p: p / sum, i)).OrderByDescending(t => t.p).Take(3)
        .Select(t => new { intent = data.Intents[t.i], domain = data.DomainOf[data.Intents[t.i]], probability = Math.Round(t.p, 4) }).ToList();
    return Results.Ok(new
    {
        text = request.Text,
        intent = top[0].intent,
        domain = top[0].domain,
        probability = top[0].probability,
        top,
        version = output.Version is { } v ? $"v{v}" : "base",
        ms = Math.Round(sw.Elapsed.TotalMilliseconds, 1),
    });
});

app.MapPost("/feedback", async (FeedbackRequest request, SentenceEmbedder embed, IFeedbackWriter writer, CancellationToken ct) =>
{
    if (string.IsNullOrWhiteSpace(request.Text) || request.Text.Length > 1000)
        return Results.BadRequest(new { error = "text must be 1 to 1000 characters", field = "text" });
    if (string.IsNullOrWhiteSpace(request.Intent))
        return Results.BadRequest(new { error = "intent is required", field = "intent" });
    try
    {
        var receipt = await writer.WriteAsync(new Feedback
        {
            Tensors = new Dictionary<string, TensorData> { [IntentHead.InputName] = TensorData.Float(embed.Embed(request.Text), 1, SentenceEmbedder.Dimension) },
            Label = request.Intent,
            UserId = string.IsNullOrWhiteSpace(request.UserId) ? "web" : request.UserId,
            Metadata = new Dictionary<string, string> { ["text"] = request.Text },
        }, ct);
        return Results.Ok(new { id = receipt.Id, sequence = receipt.Sequence, heldOut = receipt.HeldOut });
    }
    catch (FeedbackValidationException e)
    {
        return Results.BadRequest(new { error = e.Message, field = e.Field, kind = e.Kind.ToString() });
    }
});

app.MapDelete("/feedback/users/{userId}", async (string userId, IFeedbackStore store, CancellationToken ct) =>
    Results.Ok(new { userId, deleted = await store.DeleteUserAsync(userId, ct) }));

app.MapGet("/models", (ModelVersionStore versions, IModelHandle model) => Results.Ok(new
{
    serving = model.ServingVersion is { } v ? $"v{v}" : "base",
    lastSwapMs = log.LastSwapMs,
    versions = versions.ListVersions().Reverse().Select(info => new
    {
        version = info.Version,
        current = info.Version == model.ServingVersion,
        metrics = ReadJson(info.MetricsPath),
        decision = ReadJson(info.DecisionPath),
    }),
    rounds = log.Recent(),
}));

app.MapPost("/models/rollback", async (RollbackRequest request, ModelVersionStore versions, IModelHandle model, CancellationToken ct) =>
{
    try
    {
        var target = await versions.RollbackAsync(request.Version, ct);
        return Results.Ok(new { serving = $"v{model.ServingVersion}", rolledBackTo = target.Version });
    }
    catch (ModelVersionNotFoundException e)
    {
        return Results.NotFound(new { error = e.Message });
    }
});

app.MapHealthChecks("/health", new HealthCheckOptions
{
    ResponseWriter = (context, report) =>
    {
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsJsonAsync(new
        {
            status = report.Status.ToString(),
            checks = report.Entries.Select(e => new { name = e.Key, status = e.Value.Status.ToString(), description = e.Value.Description, data = e.Value.Data }),
        });
    },
});

app.Run();

static JsonElement? ReadJson(string path)
{
    try
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return doc.RootElement.Clone();
    }
    catch (Exception e) when (e is IOException or JsonException)
    {
        return null;
    }
}

/// <summary>Body of <c>POST /predict</c>.</summary>
internal sealed record PredictRequest(string Text);

/// <summary>Body of <c>POST /feedback</c>.</summary>
internal sealed record FeedbackRequest(string Text, string Intent, string? UserId);

/// <summary>Body of <c>POST /models/rollback</c>.</summary>
internal sealed record RollbackRequest(int Version);

/// <summary>The last rounds' outcomes, from <see cref="FineTuningEvents.RoundCompleted"/>.</summary>
internal sealed class RoundLog
{
    private readonly ConcurrentQueue<object> _rounds = new();

    public double? LastSwapMs { get; set; }

    public void Add(RoundCompletedEventArgs e)
    {
        var d = e.Decision;
        _rounds.Enqueue(new
        {
            round = e.Round,
            outcome = e.Outcome.ToString(),
            seconds = Math.Round(e.Duration.TotalSeconds, 2),
            trainLoss = d?.TrainLoss,
            heldOut = new { serving = d?.Serving.HeldOutMetric, candidate = d?.Candidate.HeldOutMetric, count = d?.Candidate.HeldOutCount },
            golden = new { serving = d?.Serving.GoldenMetric, candidate = d?.Candidate.GoldenMetric, count = d?.Candidate.GoldenCount },
            reasons = d?.Reasons ?? (e.Error is { } err ? [err.Message] : []),
        });
        while (_rounds.Count > 20) _rounds.TryDequeue(out _);
    }

    public object[] Recent() => _rounds.Reverse().ToArray();
}
