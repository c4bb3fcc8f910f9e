using System.Diagnostics;
using Xunit.Abstractions;

namespace OnnxTune.WebApp.Tests;

/// <summary>A fact that is skipped, saying why, when Debian's chromium is not installed.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public const string Chromium = "/usr/bin/chromium";

    public ChromiumFactAttribute()
    {
        if (!File.Exists(Chromium))
            Skip = $"{Chromium} is missing: install it with 'apt-get install -y chromium' to run the real-browser check.";
    }
}

/// <summary>The page in a real browser: headless chromium signs in (the page's #signin link) and draws the chart.</summary>
[Collection(WebAppCollection.Name)]
public sealed class BrowserTests(WebAppFixture fixture, ITestOutputHelper output)
{
    [ChromiumFact]
    public async Task Headless_chromium_renders_the_page_signs_in_and_draws_the_chart()
    {
        await using var app = await fixture.StartAsync();
        var profile = Directory.CreateTempSubdirectory("chromium-").FullName;
        try
        {
            var dom = await RunChromiumAsync(profile, "--dump-dom", new Uri(app.BaseAddress, "/#signin").ToString());
            output.WriteLine(dom.Length > 3000 ? dom[..3000] : dom);
            Assert.Contains("<canvas id=\"chart\"", dom, StringComparison.Ordinal);
            Assert.Contains("data-versions=\"0\"", dom, StringComparison.Ordinal); // drawChart ran on GET /models data
            Assert.Contains("Signed in as u-", dom, StringComparison.Ordinal);
            Assert.Contains("serving base", dom, StringComparison.Ordinal);
            Assert.Contains(">alarm</option>", dom, StringComparison.Ordinal); // intents from GET /intents
        }
        finally
        {
            try { Directory.Delete(profile, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    internal static async Task<string> RunChromiumAsync(string profile, params string[] args)
    {
        var psi = new ProcessStartInfo(ChromiumFactAttribute.Chromium) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", $"--user-data-dir={profile}", "--virtual-time-budget=15000" }.Concat(args))
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("chromium did not finish in 120 s: " + await stderr);
        }
        return await stdout;
    }
}
