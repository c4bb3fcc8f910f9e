using System.Net;
using System.Text;

namespace OnnxTune.WebApp.Tests;

/// <summary>Rate limits per user (and per IP for sign-in), and admin endpoints with no key configured.</summary>
[Collection(WebAppCollection.Name)]
public sealed class RateLimitTests(WebAppFixture fixture) : IAsyncLifetime
{
    private RunningApp _app = null!;

    public async Task InitializeAsync() => _app = await fixture.StartAsync(new Dictionary<string, string>
    {
        ["WebApp:RateLimits:PredictPerMinute"] = "10",
        ["WebApp:RateLimits:FeedbackPerMinute"] = "5",
        ["WebApp:RateLimits:SignInPerMinute"] = "4",
    }, adminKey: false);

    public async Task DisposeAsync() => await _app.DisposeAsync();

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    [Fact]
    public async Task Predict_and_feedback_reach_429_per_user_and_sign_in_per_IP()
    {
        var (alice, _) = await _app.SignInAsync();
        var (bob, _) = await _app.SignInAsync();

        async Task<int> UntilLimitedAsync(Func<Task<HttpResponseMessage>> call)
        {
            for (var i = 1; i <= 50; i++) // bounded: the limits are 10 and 5 per minute
            {
                var r = await call();
                if (r.StatusCode == HttpStatusCode.TooManyRequests)
                {
                    await SecurityTests.AssertGenericProblemAsync(r);
                    return i;
                }
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            }
            return -1;
        }

        Assert.Equal(11, await UntilLimitedAsync(() => alice.PostAsync("/predict", Json("""{"text":"set an alarm"}"""))));
        Assert.Equal(6, await UntilLimitedAsync(() => alice.PostAsync("/feedback", Json("""{"text":"set an alarm","intent":"alarm"}"""))));
        // Another user has budgets of their own.
        Assert.Equal(HttpStatusCode.OK, (await bob.PostAsync("/predict", Json("""{"text":"set an alarm"}"""))).StatusCode);
        // Sign-in is limited per IP (4 per minute; two were used above), so new identities cannot be minted to dodge the per-user limits.
        Assert.Equal(3, await UntilLimitedAsync(() => _app.Client().PostAsync("/signin", null)));
    }

    [Fact]
    public async Task With_no_admin_key_configured_admin_endpoints_refuse_everyone()
    {
        foreach (var key in new[] { WebAppFixture.AdminKey, "", "admin" })
        {
            var client = _app.Client(apiKey: key.Length == 0 ? null : key);
            Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("/models/decisions")).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await client.PostAsync("/models/rollback", Json("""{"version":1}"""))).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await client.DeleteAsync("/feedback/users/u-1")).StatusCode);
        }
    }
}
