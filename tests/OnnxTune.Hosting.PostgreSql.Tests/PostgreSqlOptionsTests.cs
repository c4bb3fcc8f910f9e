using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using OnnxTune.Hosting.Tests;

namespace OnnxTune.Hosting.PostgreSql.Tests;

/// <summary>Options of <c>UsePostgreSql</c>: validated at start, every message naming the configuration key (no server needed).</summary>
public sealed class PostgreSqlOptionsTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private async Task<Exception> StartFailsAsync(Dictionary<string, string?> config, Action<IOnDeviceFineTuningBuilder> use, string name = "")
    {
        TestModels.WriteArtifacts(_dir.Sub("artifacts"));
        var builder = Host.CreateEmptyApplicationBuilder(new());
        builder.Configuration.AddInMemoryCollection(config);
        use(builder.Services.AddOnDeviceFineTuning(name, o =>
        {
            o.ArtifactsPath = _dir.Sub("artifacts");
            o.ModelStorePath = _dir.Sub("store");
        }));
        using var host = builder.Build();
        return await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync());
    }

    [Fact]
    public async Task A_missing_connection_string_fails_start_naming_the_key()
    {
        var e = Assert.IsType<OptionsValidationException>(await StartFailsAsync([], b => b.UsePostgreSql()));
        Assert.Contains("PostgreSql:ConnectionString is required", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bad_values_from_configuration_fail_start_each_naming_its_key()
    {
        var e = Assert.IsType<OptionsValidationException>(await StartFailsAsync(new()
        {
            ["PostgreSql:intent:ConnectionString"] = "Host=db;Database=app",
            ["PostgreSql:intent:Schema"] = "Bad-Schema",
            ["PostgreSql:intent:LeaseDuration"] = "00:00:00.100",
            ["PostgreSql:intent:VersionFiles"] = "SharedFolder",
            ["PostgreSql:intent:MaxBlobBytes"] = "0",
        }, b => b.UsePostgreSql(), name: "intent"));
        foreach (var key in new[] { "PostgreSql:intent:Schema", "PostgreSql:intent:LeaseDuration", "PostgreSql:intent:SharedFolderPath", "PostgreSql:intent:MaxBlobBytes" })
            Assert.Contains(key, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("ConnectionString", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_configuration_key_fails_start()
    {
        var e = await StartFailsAsync(new() { ["PostgreSql:ConnString"] = "Host=db" }, b => b.UsePostgreSql());
        Assert.Contains("ConnString", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_connection_string_Npgsql_cannot_parse_fails_start_naming_the_key()
    {
        var e = Assert.IsType<OptionsValidationException>(await StartFailsAsync([], b => b.UsePostgreSql("Hosty=db;Nonsense")));
        Assert.Contains("PostgreSql:ConnectionString is not a valid Npgsql connection string", e.Message, StringComparison.Ordinal);
    }
}
