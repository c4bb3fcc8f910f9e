using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using OnnxTune.Samples;
using OnnxTune.WebApp;

namespace OnnxTune.WebApp.Tests;

/// <summary>
/// A small model for the web tests: MiniLM with a 3-intent head, only the head trainable, artifacts built once and
/// never trained (the sample's <c>WebApp:ArtifactsPath</c> setting serves a prebuilt folder instead of training
/// MiniLM + head at first start). Each test app gets its own store under a temp folder and listens on 127.0.0.1:0.
/// </summary>
public sealed class WebAppFixture : IDisposable
{
    public static readonly string[] Intents = ["alarm", "translate", "weather"];
    public const string AdminKey = "test-admin-key-0123456789abcdef";

    public WebAppFixture()
    {
        Root = Directory.CreateTempSubdirectory("onnxtune-webapp-tests-").FullName;
        ArtifactsPath = Path.Combine(Root, "artifacts");
        EncoderIntentModel.BuildArtifacts(ArtifactsPath, Intents, new EncoderIntentSettings { TrainableLayers = 0 });
    }

    public string Root { get; }

    public string ArtifactsPath { get; }

    public static string RepoRoot() => Clinc150.RepoRoot();

    /// <summary>Starts the sample (its real appsettings.json, then <paramref name="settings"/>) on a loopback port.</summary>
    public async Task<RunningApp> StartAsync(IDictionary<string, string>? settings = null, bool adminKey = true)
    {
        var outDir = Directory.CreateTempSubdirectory("app-").FullName;
        var config = new Dictionary<string, string>
        {
            ["urls"] = "http://127.0.0.1:0",
            ["Logging:LogLevel:Default"] = "Warning",
            ["WebApp:OutDir"] = outDir,
            ["WebApp:ArtifactsPath"] = ArtifactsPath,
            ["OnDeviceFineTuning:MinNewFeedback"] = "100000", // no rounds in these tests
            ["OnDeviceFineTuning:MaxInterval"] = "1.00:00:00",
        };
        if (adminKey) config["Admin:ApiKeys:0"] = AdminKey;
        foreach (var (k, v) in settings ?? new Dictionary<string, string>()) config[k] = v;
        var app = IntentWebApp.Build(new WebApplicationOptions
        {
            Args = config.Select(p => $"--{p.Key}={p.Value}").ToArray(),
            ContentRootPath = Path.Combine(RepoRoot(), "samples", "OnnxTune.WebApp"),
            EnvironmentName = "Development", // the environment that would show exception details if anything did
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new RunningApp(app, new Uri(address), outDir);
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>A started app and clients for it (each client its own cookie jar: one client, one user).</summary>
public sealed class RunningApp(WebApplication app, Uri baseAddress, string outDir) : IAsyncDisposable
{
    private readonly List<HttpClient> _clients = [];

    public WebApplication App { get; } = app;
    public Uri BaseAddress { get; } = baseAddress;
    public string OutDir { get; } = outDir;

    public HttpClient Client(string? apiKey = null)
    {
        var client = new HttpClient(new HttpClientHandler { CookieContainer = new CookieContainer(), UseCookies = true }) { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        if (apiKey is not null) client.DefaultRequestHeaders.Add("X-Api-Key", apiKey);
        _clients.Add(client);
        return client;
    }

    /// <summary>A client signed in as a new demo user, and that user's id.</summary>
    public async Task<(HttpClient Client, string UserId)> SignInAsync()
    {
        var client = Client();
        var r = await client.PostAsync("/signin", null);
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var me = await client.GetFromJsonAsync<JsonElement>("/me");
        return (client, me.GetProperty("userId").GetString()!);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var c in _clients) c.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        try { Directory.Delete(OutDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

[CollectionDefinition(Name)]
public sealed class WebAppCollection : ICollectionFixture<WebAppFixture>
{
    public const string Name = "Web app";
}
