using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using OnnxTune.Hosting;
using OnnxTune.Samples;

namespace OnnxTune.WebApp;

/// <summary>The sample's settings (section <c>WebApp</c> of appsettings.json).</summary>
public sealed class WebAppSettings
{
    /// <summary>Where the model, the store and the data-protection keys live (default: artifacts/webapp in the repo).</summary>
    public string? OutDir { get; set; }

    /// <summary>Utterances per known intent the shipped model is trained on offline (first start only).</summary>
    public int TrainPerIntent { get; set; } = 20;

    /// <summary>Golden-set utterances per known intent (not trained on).</summary>
    public int GoldenPerIntent { get; set; } = 4;

    /// <summary>A prebuilt artifacts folder to serve instead of training MiniLM + head at first start (tests use a small one).</summary>
    public string? ArtifactsPath { get; set; }

    /// <summary>With <see cref="ArtifactsPath"/>: the trained folder to serve, if any.</summary>
    public string? TrainedModelPath { get; set; }

    /// <summary>With <see cref="ArtifactsPath"/>: the golden set, if any.</summary>
    public string? GoldenSetPath { get; set; }

    /// <summary>Characters per text at most (<c>/predict</c>, <c>/feedback</c>).</summary>
    public int MaxTextLength { get; set; } = 300;

    /// <summary>Request body bytes at most (every endpoint).</summary>
    public long MaxBodyBytes { get; set; } = 4096;

    public RateLimitSettings RateLimits { get; set; } = new();
}

/// <summary>Requests per minute and partition.</summary>
public sealed class RateLimitSettings
{
    public int PredictPerMinute { get; set; } = 60;
    public int FeedbackPerMinute { get; set; } = 20;
    public int SignInPerMinute { get; set; } = 5;
    public int PerIpPerMinute { get; set; } = 600;
}

public static class IntentWebApp
{
    /// <summary>Builds the app: the shipped model (trained offline at first start), hosting, security and endpoints.</summary>
    public static WebApplication Build(WebApplicationOptions options)
    {
        var builder = WebApplication.CreateBuilder(options);
        var settings = builder.Configuration.GetSection("WebApp").Get<WebAppSettings>() ?? new WebAppSettings();
        var outDir = Path.GetFullPath(settings.OutDir ?? Path.Combine(Clinc150.RepoRoot(), "artifacts", "webapp"));
        var data = Clinc150.Load(Clinc150.Locate());
        var knownDomains = data.Domains.Take(5).Select(d => d.Domain).ToHashSet(StringComparer.Ordinal);

        // 1. The shipped model. Offline, as an app team would before shipping (here: at first start, cached under
        //    OutDir/model): artifacts from MiniLM + head, trained on CLINC150's first 5 domains. The other 5 are for users to teach.
        string artifacts, goldenPath;
        string? trained;
        if (string.IsNullOrEmpty(settings.ArtifactsPath))
        {
            bool IsKnown(Utterance u) => knownDomains.Contains(data.DomainOf[u.Intent]);
            var byIntent = data.Train.Where(IsKnown).GroupBy(u => u.Intent, StringComparer.Ordinal).ToList();
            var sw = Stopwatch.StartNew();
            (artifacts, trained, var reused) = EncoderIntentModel.Prepare(Path.Combine(outDir, "model"), data.Intents,
                byIntent.SelectMany(g => g.Take(settings.TrainPerIntent)).ToList(), new EncoderIntentSettings(),
                line => Console.WriteLine("  " + line));
            Console.WriteLine(reused ? "Shipped model: reused from " + Path.Combine(outDir, "model") : $"Shipped model trained offline in {sw.Elapsed.TotalSeconds:F0} s");
            goldenPath = Path.Combine(outDir, "golden.jsonl");
            File.WriteAllLines(goldenPath, byIntent.SelectMany(g => g.Skip(settings.TrainPerIntent).Take(settings.GoldenPerIntent))
                .Select(u => JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = u.Text, ["label"] = u.Intent })));
        }
        else
        {
            (artifacts, trained, goldenPath) = (settings.ArtifactsPath, settings.TrainedModelPath, settings.GoldenSetPath ?? "");
        }

        // 2. Hosting: one registration; round triggers and training settings from "OnDeviceFineTuning" in appsettings.json.
        builder.Services.AddOnDeviceFineTuning(o =>
        {
            o.ArtifactsPath = artifacts;
            o.TrainedModelPath = string.IsNullOrEmpty(trained) ? null : trained;
            o.ModelStorePath = Path.Combine(outDir, "store");
            o.GoldenSetPath = string.IsNullOrEmpty(goldenPath) ? null : goldenPath;
            o.MaxTextLength = settings.MaxTextLength;
        }).BindConfiguration();
        builder.Services.AddSingleton<RoundLog>();
        builder.AddWebSecurity(settings, Path.Combine(outDir, "keys"));

        var app = builder.Build();
        if (ApiKeyHandler.ConfiguredKeyCount(app.Configuration) == 0)
            app.Logger.LogWarning("No admin API key is configured (Admin:ApiKeys, 16+ characters): admin endpoints refuse every caller.");
        var log = app.Services.GetRequiredService<RoundLog>();
        var events = app.Services.GetRequiredService<FineTuningEvents>();
        events.RoundCompleted += (_, e) =>
        {
            log.Add(e);
            if (e.Error is not null) app.Logger.LogError(e.Error, "Round {Round} failed", e.Round);
        };

        app.UseWebSecurity();
        app.UseDefaultFiles();
        app.UseStaticFiles();
        app.UseRouting();
        app.UseAuthentication();
        app.UseAuthorization();
        app.UseRateLimiter();
        MapEndpoints(app, settings, data, knownDomains, log);
        return app;
    }

    private static void MapEndpoints(WebApplication app, WebAppSettings settings, Clinc150 data, HashSet<string> knownDomains, RoundLog log)
    {
        string? DomainOf(string? intent) => intent is not null && data.DomainOf.TryGetValue(intent, out var d) ? d : null;
        IResult? CheckText(string? text) =>
            string.IsNullOrWhiteSpace(text) || text.Length > settings.MaxTextLength
                ? Problem(400, $"text must be 1 to {settings.MaxTextLength} characters")
                : null;

        // Demo sign-in: a fresh user id made by the server, in a cookie. A real app signs users in with its identity provider.
        app.MapPost("/signin", async (HttpContext context) =>
        {
            var id = WebSecurity.NewUserId();
            var identity = new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, id)], CookieAuthenticationDefaults.AuthenticationScheme);
            await context.SignInAsync(CookieAuthenticationDefaults.AuthenticationScheme, new ClaimsPrincipal(identity));
            return Results.Ok(new { userId = id });
        }).RequireRateLimiting(WebSecurity.SignInLimit);
        app.MapPost("/signout", async (HttpContext context) =>
        {
            await context.SignOutAsync(CookieAuthenticationDefaults.AuthenticationScheme);
            return Results.NoContent();
        });
        app.MapGet("/me", (ClaimsPrincipal user) => Results.Ok(new { userId = user.UserId() })).RequireAuthorization(WebSecurity.UserPolicy);

        app.MapGet("/intents", (ITextClassifier classifier) => (classifier.Labels ?? [])
            .GroupBy(l => DomainOf(l) ?? "other")
            .Select(g => new { domain = g.Key, known = knownDomains.Contains(g.Key), intents = g.ToList() }))
            .RequireAuthorization(WebSecurity.UserPolicy);

        app.MapPost("/predict", (PredictRequest request, ITextClassifier classifier) =>
        {
            if (CheckText(request.Text) is { } bad) return bad;
            var sw = Stopwatch.StartNew();
            var p = classifier.Predict(request.Text!);
            var labels = classifier.Labels ?? [];
            var top = p.Probabilities.Select((prob, i) => (prob, i)).OrderByDescending(t => t.prob).Take(3)
                .Select(t => new { intent = labels.Count > t.i ? labels[t.i] : t.i.ToString(), domain = DomainOf(labels.Count > t.i ? labels[t.i] : null), probability = Math.Round(t.prob, 4) })
                .ToList();
            return Results.Ok(new
            {
                intent = p.Label,
                domain = DomainOf(p.Label),
                probability = Math.Round(p.Confidence, 4),
                top,
                version = VersionName(p.Version),
                ms = Math.Round(sw.Elapsed.TotalMilliseconds, 1),
            });
        }).RequireAuthorization(WebSecurity.UserPolicy).RequireRateLimiting(WebSecurity.PredictLimit);

        // A correction, attributed to the signed-in user (a userId in the body is ignored). The receipt does not say
        // whether the record went to the held-out split: the gate's split is not the caller's to steer.
        app.MapPost("/feedback", async (FeedbackRequest request, ClaimsPrincipal user, ITextClassifier classifier, IFeedbackWriter writer, CancellationToken ct) =>
        {
            if (CheckText(request.Text) is { } bad) return bad;
            if (string.IsNullOrEmpty(request.Intent) || classifier.Labels?.Contains(request.Intent, StringComparer.Ordinal) != true)
                return Problem(400, "intent must be one of GET /intents");
            try
            {
                var receipt = await writer.WriteAsync(Feedback.ForText(request.Text!, request.Intent, user.UserId()), ct);
                return Results.Ok(new { id = receipt.Id, sequence = receipt.Sequence });
            }
            catch (FeedbackValidationException e)
            {
                app.Logger.LogInformation("Feedback refused: {Kind} {Field}: {Message}", e.Kind, e.Field, e.Message);
                return Problem(400, $"the feedback was refused ({e.Kind})");
            }
        }).RequireAuthorization(WebSecurity.UserPolicy).RequireRateLimiting(WebSecurity.FeedbackLimit);

        // A user forgets their own records; only an admin may delete anyone else's.
        app.MapDelete("/feedback/me", async (ClaimsPrincipal user, IFeedbackStore store, CancellationToken ct) =>
            Results.Ok(new { deleted = await store.DeleteUserAsync(user.UserId(), ct) }))
            .RequireAuthorization(WebSecurity.UserPolicy).RequireRateLimiting(WebSecurity.FeedbackLimit);
        app.MapDelete("/feedback/users/{userId}", async (string userId, IFeedbackStore store, CancellationToken ct) =>
        {
            var deleted = await store.DeleteUserAsync(userId, ct);
            app.Logger.LogInformation("Admin deleted {Count} feedback records of user {User}", deleted, userId);
            return Results.Ok(new { userId, deleted });
        }).RequireAuthorization(WebSecurity.AdminPolicy);

        // Per-version metrics for the page's chart (any signed-in user): accuracy only, no decisions or reasons.
        app.MapGet("/models", (ModelVersionStore versions, IModelHandle model) =>
        {
            var list = versions.ListVersions().Select(v => (info: v, decision: ReadDecision(v.DecisionPath))).ToList();
            var first = list.Select(v => v.decision).FirstOrDefault(d => d is not null);
            return Results.Ok(new
            {
                serving = VersionName(model.ServingVersion),
                versions = (first is null ? [] : new[] { new VersionPoint("base", model.ServingVersion is null, first.Serving.HeldOutMetric, first.Serving.GoldenMetric, null) })
                    .Concat(list.Select(v => new VersionPoint(VersionName(v.info.Version), v.info.Version == model.ServingVersion,
                        v.decision?.Candidate.HeldOutMetric, v.decision?.Candidate.GoldenMetric, v.decision?.DecidedAt))),
            });
        }).RequireAuthorization(WebSecurity.UserPolicy);

        // Admin: gate decisions per version and the recent rounds, and rollback.
        app.MapGet("/models/decisions", (ModelVersionStore versions, IModelHandle model) => Results.Ok(new
        {
            serving = VersionName(model.ServingVersion),
            versions = versions.ListVersions().Reverse().Select(v => new { version = v.Version, current = v.Version == model.ServingVersion, decision = Describe(ReadDecision(v.DecisionPath)) }),
            rounds = log.Recent(),
        })).RequireAuthorization(WebSecurity.AdminPolicy);
        app.MapPost("/models/rollback", async (RollbackRequest request, ModelVersionStore versions, IModelHandle model, CancellationToken ct) =>
        {
            try
            {
                var target = await versions.RollbackAsync(request.Version, ct);
                app.Logger.LogWarning("Admin rolled back to v{Version}", target.Version);
                return Results.Ok(new { serving = VersionName(model.ServingVersion), rolledBackTo = target.Version });
            }
            catch (ModelVersionNotFoundException e)
            {
                app.Logger.LogInformation(e, "Rollback to v{Version} refused", request.Version);
                return Problem(404, $"version {request.Version} is not kept");
            }
        }).RequireAuthorization(WebSecurity.AdminPolicy);

        // Health for probes: statuses only (the hosting check's description can name files; it goes to the log).
        app.MapHealthChecks("/health", new HealthCheckOptions
        {
            ResponseWriter = (context, report) =>
            {
                foreach (var (name, entry) in report.Entries.Where(e => e.Value.Status != Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Healthy))
                    app.Logger.LogWarning(entry.Exception, "Health check {Name}: {Status} {Description}", name, entry.Status, entry.Description);
                return context.Response.WriteAsJsonAsync(new
                {
                    status = report.Status.ToString(),
                    checks = report.Entries.Select(e => new { name = e.Key, status = e.Value.Status.ToString() }),
                });
            },
        });
    }

    private static IResult Problem(int status, string detail) => Results.Problem(statusCode: status, detail: detail);

    private static string VersionName(int? version) => version is { } v ? $"v{v}" : "base";

    /// <summary>A version's <c>decision.json</c> (as hosting writes it: snake_case), or null when missing or unreadable.</summary>
    public static GateDecision? ReadDecision(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<GateDecision>(File.ReadAllBytes(path), JsonOptions);
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }
    }

    private static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web) { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>The decision without free text that could name files: metrics and which checks passed.</summary>
    public static object? Describe(GateDecision? d) => d is null ? null : new
    {
        round = d.Round,
        promoted = d.Promoted,
        decidedAt = d.DecidedAt,
        trainLoss = d.TrainLoss,
        servingVersion = d.ServingVersion,
        heldOut = new { serving = d.Serving.HeldOutMetric, candidate = d.Candidate.HeldOutMetric, count = d.Candidate.HeldOutCount },
        golden = new { serving = d.Serving.GoldenMetric, candidate = d.Candidate.GoldenMetric, count = d.Candidate.GoldenCount },
        checks = d.Checks.Select(c => new { gate = c.Gate, passed = c.Passed, detail = RoundLog.Scrub(c.Detail) }),
    };
}

/// <summary>One point of the page's chart.</summary>
internal sealed record VersionPoint(string Version, bool Current, double? HeldOut, double? Golden, DateTimeOffset? DecidedAt);

/// <summary>Body of <c>POST /predict</c>.</summary>
public sealed record PredictRequest(string? Text);

/// <summary>Body of <c>POST /feedback</c> (no user id: it comes from the caller's identity).</summary>
public sealed record FeedbackRequest(string? Text, string? Intent);

/// <summary>Body of <c>POST /models/rollback</c>.</summary>
public sealed record RollbackRequest(int Version);

/// <summary>The last rounds' outcomes, from <see cref="FineTuningEvents.RoundCompleted"/> (errors as a generic line: details are logged).</summary>
internal sealed class RoundLog
{
    private readonly ConcurrentQueue<object> _rounds = new();

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
            reasons = d is not null ? d.Reasons.Select(Scrub).ToArray() : e.Error is not null ? ["the round failed (details in the server log)"] : [],
        });
        while (_rounds.Count > 20) _rounds.TryDequeue(out _);
    }

    public object[] Recent() => _rounds.Reverse().ToArray();

    /// <summary>Gate details are numbers and names; anything path-like is cut, to be safe.</summary>
    public static string Scrub(string text) =>
        System.Text.RegularExpressions.Regex.Replace(text, @"(?:[A-Za-z]:)?[\\/][^\s'""]*", "[path]");
}
