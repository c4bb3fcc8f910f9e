using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OnnxTune.Hosting;

namespace OnnxTune.WebApp.Tests;

/// <summary>The sample's protections over real HTTP on a loopback port: who may call what, whose data, sizes, errors.</summary>
[Collection(WebAppCollection.Name)]
public sealed class SecurityTests(WebAppFixture fixture) : IAsyncLifetime
{
    private RunningApp _app = null!;

    public async Task InitializeAsync() => _app = await fixture.StartAsync(new Dictionary<string, string> { ["WebApp:RateLimits:SignInPerMinute"] = "1000" });

    public async Task DisposeAsync() => await _app.DisposeAsync();

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    [Fact]
    public async Task Admin_endpoints_refuse_anonymous_callers_signed_in_users_and_wrong_keys()
    {
        var (user, userId) = await _app.SignInAsync();
        var callers = new[] { ("anonymous", _app.Client()), ("signed-in user", user), ("wrong key", _app.Client(apiKey: "not-the-admin-key-0123456789")) };
        foreach (var (who, client) in callers)
        {
            var responses = new[]
            {
                await client.GetAsync("/models/decisions"),
                await client.PostAsync("/models/rollback", Json("""{"version":1}""")),
                await client.DeleteAsync($"/feedback/users/{userId}"),
            };
            foreach (var r in responses)
                Assert.True(r.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden, $"{who}: {r.RequestMessage!.Method} {r.RequestMessage.RequestUri} gave {(int)r.StatusCode}");
        }

        var admin = _app.Client(apiKey: WebAppFixture.AdminKey);
        Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/models/decisions")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.PostAsync("/models/rollback", Json("""{"version":1}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await admin.DeleteAsync($"/feedback/users/{userId}")).StatusCode);
    }

    [Fact]
    public async Task User_endpoints_refuse_callers_who_have_not_signed_in()
    {
        var anonymous = _app.Client();
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("/predict", Json("""{"text":"set an alarm"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("/feedback", Json("""{"text":"set an alarm","intent":"alarm"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.DeleteAsync("/feedback/me")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/models")).StatusCode);
        // A forged cookie is no identity.
        var forged = _app.Client();
        forged.DefaultRequestHeaders.Add("Cookie", "onnxtune-user=CfDJ8forged");
        Assert.Equal(HttpStatusCode.Unauthorized, (await forged.PostAsync("/predict", Json("""{"text":"set an alarm"}"""))).StatusCode);
    }

    [Fact]
    public async Task The_user_id_comes_from_the_identity_not_from_the_body()
    {
        var (client, userId) = await _app.SignInAsync();
        Assert.StartsWith("u-", userId, StringComparison.Ordinal);
        var r = await client.PostAsync("/feedback", Json("""{"text":"wake me up at six","intent":"alarm","userId":"victim","UserId":"victim"}"""));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var receipt = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.False(receipt.TryGetProperty("heldOut", out _)); // the gate's split is not revealed to the caller

        var store = _app.App.Services.GetRequiredService<IFeedbackStore>();
        var records = (await store.GetTrainingSinceAsync(0, long.MaxValue)).Concat(await store.GetHeldOutAsync(long.MaxValue)).ToList();
        var record = Assert.Single(records, x => x.Text == "wake me up at six");
        Assert.Equal(userId, record.UserId);

        var admin = _app.Client(apiKey: WebAppFixture.AdminKey);
        Assert.Equal(0, (await (await admin.DeleteAsync("/feedback/users/victim")).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("deleted").GetInt32());
        Assert.Equal(1, (await (await admin.DeleteAsync($"/feedback/users/{userId}")).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("deleted").GetInt32());
    }

    [Fact]
    public async Task A_user_can_delete_only_their_own_feedback()
    {
        var (alice, aliceId) = await _app.SignInAsync();
        var (mallory, _) = await _app.SignInAsync();
        Assert.Equal(HttpStatusCode.OK, (await alice.PostAsync("/feedback", Json("""{"text":"translate hello to french","intent":"translate"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await alice.PostAsync("/feedback", Json("""{"text":"will it rain today","intent":"weather"}"""))).StatusCode);

        var attempt = await mallory.DeleteAsync($"/feedback/users/{aliceId}");
        Assert.True(attempt.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden, $"gave {(int)attempt.StatusCode}");
        Assert.Equal(0, (await (await mallory.DeleteAsync("/feedback/me")).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("deleted").GetInt32());
        Assert.Equal(2, (await (await alice.DeleteAsync("/feedback/me")).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("deleted").GetInt32());
    }

    [Fact]
    public async Task Signed_in_users_predict_and_send_corrections_through_the_text_path()
    {
        var (client, _) = await _app.SignInAsync();
        var p = await (await client.PostAsync("/predict", Json("""{"text":"what's the weather like tomorrow"}"""))).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Contains(p.GetProperty("intent").GetString(), WebAppFixture.Intents);
        Assert.Equal("base", p.GetProperty("version").GetString());
        Assert.Equal(3, p.GetProperty("top").GetArrayLength());
        var intents = await client.GetFromJsonAsync<JsonElement>("/intents");
        Assert.Equal(WebAppFixture.Intents.Order(), intents.EnumerateArray().SelectMany(d => d.GetProperty("intents").EnumerateArray().Select(i => i.GetString()!)).Order());
        var unknown = await client.PostAsync("/feedback", Json("""{"text":"book a flight","intent":"book_flight"}"""));
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
        var models = await client.GetFromJsonAsync<JsonElement>("/models");
        Assert.Equal("base", models.GetProperty("serving").GetString());
    }

    [Fact]
    public async Task Oversized_bodies_and_texts_are_refused()
    {
        var (client, _) = await _app.SignInAsync();
        var big = JsonSerializer.Serialize(new { text = new string('a', 10_000) });
        foreach (var path in new[] { "/predict", "/feedback" })
        {
            var r = await client.PostAsync(path, Json(big));
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, r.StatusCode);
            await AssertGenericProblemAsync(r);
            // Chunked (no Content-Length): refused while reading.
            var chunked = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(big)));
            chunked.Headers.ContentType = new("application/json");
            var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = chunked };
            request.Headers.TransferEncodingChunked = true;
            var rc = await client.SendAsync(request);
            Assert.True(rc.StatusCode is HttpStatusCode.RequestEntityTooLarge or HttpStatusCode.BadRequest, $"chunked {path} gave {(int)rc.StatusCode}");
            await AssertGenericProblemAsync(rc);
        }
        // Under the body cap but over the text cap (300 characters).
        var longText = JsonSerializer.Serialize(new { text = new string('a', 301), intent = "alarm" });
        Assert.Equal(HttpStatusCode.BadRequest, (await client.PostAsync("/predict", Json(longText))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await client.PostAsync("/feedback", Json(longText))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await client.PostAsync("/predict", Json("""{"text":"   "}"""))).StatusCode);
    }

    [Fact]
    public async Task Error_responses_carry_no_exception_text_or_paths()
    {
        var (client, _) = await _app.SignInAsync();
        var admin = _app.Client(apiKey: WebAppFixture.AdminKey);
        var responses = new List<HttpResponseMessage>
        {
            await client.PostAsync("/predict", Json("""{"text": nope""")),
            await client.PostAsync("/feedback", Json("""{"text": 42, "intent": []}""")),
            await client.PostAsync("/predict", new StringContent("text=hi", Encoding.UTF8, "application/x-www-form-urlencoded")),
            await admin.PostAsync("/models/rollback", Json("""{"version":999}""")),
            await admin.PostAsync("/models/rollback", Json("""{"version":"x"}""")),
            await client.GetAsync("/no-such-endpoint"),
            await client.GetAsync("/health"),
            await client.GetAsync("/models"),
            await admin.GetAsync("/models/decisions"),
        };
        foreach (var r in responses)
        {
            var body = await r.Content.ReadAsStringAsync();
            var what = $"{r.RequestMessage!.Method} {r.RequestMessage.RequestUri} ({(int)r.StatusCode}): {body}";
            foreach (var leak in new[] { _app.OutDir, fixture.ArtifactsPath, fixture.Root, "/tmp", "Exception", " at ", ".cs:line", "Microsoft.", "System." })
                Assert.False(body.Contains(leak, StringComparison.Ordinal), $"{what} contains '{leak}'");
            if ((int)r.StatusCode >= 400) await AssertGenericProblemAsync(r);
        }
        Assert.Equal(HttpStatusCode.NotFound, responses[3].StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, responses[0].StatusCode);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, responses[2].StatusCode);
    }

    [Fact]
    public async Task Requests_for_hosts_outside_AllowedHosts_are_refused()
    {
        var client = _app.Client();
        var request = new HttpRequestMessage(HttpMethod.Get, "/health");
        request.Headers.Host = "evil.example";
        Assert.Equal(HttpStatusCode.BadRequest, (await client.SendAsync(request)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health")).StatusCode);
    }

    [Fact]
    public async Task The_page_is_served_with_its_chart_and_a_strict_content_security_policy()
    {
        var r = await _app.Client().GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var html = await r.Content.ReadAsStringAsync();
        Assert.Contains("<canvas id=\"chart\"", html, StringComparison.Ordinal);
        Assert.DoesNotContain("http://", html, StringComparison.Ordinal); // nothing from a CDN
        Assert.DoesNotContain("https://", html, StringComparison.Ordinal);
        Assert.Contains("default-src 'self'", r.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await _app.Client().GetAsync("/app.js")).StatusCode);
    }

    internal static async Task AssertGenericProblemAsync(HttpResponseMessage r)
    {
        Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        var problem = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal((int)r.StatusCode, problem.GetProperty("status").GetInt32());
        foreach (var p in problem.EnumerateObject())
            Assert.Contains(p.Name, new[] { "type", "title", "status", "detail", "traceId", "instance" });
    }
}

/// <summary>The page's data comes from the version folders' decision files, read as hosting writes them.</summary>
public sealed class DecisionFileTests
{
    [Fact]
    public void A_decision_json_as_hosting_writes_it_is_read_with_its_metrics_and_checks()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, """
                {"model_name":"","round":1,"promoted":true,"decided_at":"2026-12-01T22:15:04.6018125+00:00","train_loss":1.66,
                 "serving":{"held_out_metric":0.5,"held_out_count":4,"golden_metric":0.95,"golden_count":300,"outputs_finite":true},
                 "candidate":{"held_out_metric":0.75,"held_out_count":4,"golden_metric":0.9533,"golden_count":300,"outputs_finite":true},
                 "checks":[{"gate":"golden-set","passed":true,"detail":"candidate 0.9533 vs serving 0.9500 (tolerance 0.0100, n=300) in /secret/path"}],
                 "reasons":[]}
                """);
            var d = IntentWebApp.ReadDecision(path);
            Assert.NotNull(d);
            Assert.True(d.Promoted);
            Assert.Equal(0.75, d.Candidate.HeldOutMetric);
            Assert.Equal(0.95, d.Serving.GoldenMetric);
            Assert.Equal(300, d.Candidate.GoldenCount);
            var described = JsonSerializer.Serialize(IntentWebApp.Describe(d));
            Assert.Contains("golden-set", described, StringComparison.Ordinal);
            Assert.DoesNotContain("/secret", described, StringComparison.Ordinal);
            File.WriteAllText(path, "{not json");
            Assert.Null(IntentWebApp.ReadDecision(path));
            Assert.Null(IntentWebApp.ReadDecision(path + ".missing"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
