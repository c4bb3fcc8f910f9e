using OnnxTune.Hosting.Internal;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using OnnxTune.Hosting.Tests;

namespace OnnxTune.Hosting.PostgreSql.Tests;

/// <summary>The feedback store suite against the default SQLite store.</summary>
public sealed class SqliteFeedbackStoreContractTests : FeedbackStoreContract
{
    private readonly TempDir _dir = new();

    private string DatabasePath => _dir.Sub("feedback.db");

    protected override IFeedbackStore OpenStore() => new SqliteFeedbackStore(DatabasePath);

    protected override void UseStore(IOnDeviceFineTuningBuilder builder)
    {
    }

    protected override Type StoreType => typeof(SqliteFeedbackStore);

    [Fact]
    public void The_default_hosting_package_does_not_reference_Npgsql() =>
        Assert.DoesNotContain(typeof(SqliteFeedbackStore).Assembly.GetReferencedAssemblies(), a => a.Name!.StartsWith("Npgsql", StringComparison.Ordinal));

    protected override Task DamageTensorsAsync(long sequence)
    {
        SqliteConnection.ClearAllPools();
        using var c = new SqliteConnection($"Data Source={DatabasePath};Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "UPDATE feedback SET tensors = '{not json' WHERE seq = $s;";
        cmd.Parameters.AddWithValue("$s", sequence);
        Assert.Equal(1, cmd.ExecuteNonQuery());
        return Task.CompletedTask;
    }

    public override void Dispose()
    {
        base.Dispose();
        _dir.Dispose();
    }
}

/// <summary>The same suite against the PostgreSQL store (a fresh schema per test on the private server).</summary>
[Collection(PostgreSqlCollection.Name)]
public sealed class PostgreSqlFeedbackStoreContractTests(PostgreSqlServer server) : FeedbackStoreContract
{
    private readonly string _schema = "t_" + Guid.NewGuid().ToString("N")[..12];

    protected override IFeedbackStore OpenStore()
    {
        PostgreSqlServer.SkipIfUnavailable();
        return new PostgreSqlFeedbackStore(server.ConnectionString, _schema);
    }

    protected override void UseStore(IOnDeviceFineTuningBuilder builder) =>
        builder.UsePostgreSql(o => { o.ConnectionString = server.ConnectionString; o.Schema = _schema; });

    protected override Type StoreType => typeof(PostgreSqlFeedbackStore);

    protected override async Task DamageTensorsAsync(long sequence)
    {
        await using var c = new NpgsqlConnection(server.ConnectionString);
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand($"UPDATE {_schema}.feedback SET tensors = '{{not json' WHERE seq = @s;", c);
        cmd.Parameters.AddWithValue("s", sequence);
        Assert.Equal(1, await cmd.ExecuteNonQueryAsync());
    }

    [SkippableFact]
    public async Task Replay_and_held_out_samples_are_the_same_records_as_in_sqlite()
    {
        using var dir = new TempDir();
        using var sqlite = new SqliteFeedbackStore(dir.Sub("f.db"));
        var pg = Open();
        foreach (var store in new[] { sqlite, pg })
            for (var i = 0; i < 120; i++) await store.AppendAsync(Record($"r{i}", null, heldOut: i % 4 == 0, label: i % 5));
        foreach (var seed in new[] { 1, 7, 42 })
        {
            Assert.Equal((await sqlite.GetReplaySampleAsync(100, 17, seed)).Select(r => r.Id), (await pg.GetReplaySampleAsync(100, 17, seed)).Select(r => r.Id));
            Assert.Equal((await ((IRoundLedger)sqlite).GetHeldOutSampleAsync(110, 6, 9, seed, default)).Select(r => r.Id),
                (await ((IRoundLedger)pg).GetHeldOutSampleAsync(110, 6, 9, seed, default)).Select(r => r.Id));
        }
    }

    [SkippableFact]
    public async Task Concurrent_appends_from_several_store_objects_get_unique_sequences_in_commit_order()
    {
        var stores = Enumerable.Range(0, 3).Select(_ => Open()).ToArray();
        var seen = new System.Collections.Concurrent.ConcurrentBag<long>();
        var latestSeen = new System.Collections.Concurrent.ConcurrentBag<(long Latest, int Visible)>();
        await Task.WhenAll(stores.Select((s, k) => Task.Run(async () =>
        {
            for (var i = 0; i < 40; i++)
            {
                seen.Add(await s.AppendAsync(Record($"s{k}-{i}", null)));
                // Whatever latest sequence a reader sees, every record up to it is already visible.
                var latest = await s.GetLatestSequenceAsync();
                latestSeen.Add((latest, (await s.GetTrainingSinceAsync(0, latest)).Count));
            }
        })));
        Assert.Equal(Enumerable.Range(1, 120).Select(i => (long)i), seen.Order());
        Assert.All(latestSeen, l => Assert.Equal(l.Latest, l.Visible));
    }
}
