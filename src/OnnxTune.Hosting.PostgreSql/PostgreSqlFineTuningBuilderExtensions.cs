using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using OnnxTune.Hosting;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.PostgreSql;
using OnnxTune.Hosting.PostgreSql.Internal;
using OnnxTune.Hosting.PostgreSql.Versions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Runs a fine-tuned model on several app instances that share one PostgreSQL database.</summary>
public static class PostgreSqlFineTuningBuilderExtensions
{
    /// <summary>
    /// Keeps the model's feedback, version registry and serving pointer in PostgreSQL (connection string
    /// <paramref name="connectionString"/>), with one trainer at a time; see <see cref="UsePostgreSql(IOnDeviceFineTuningBuilder, Action{PostgreSqlFineTuningOptions}?)"/>.
    /// </summary>
    public static IOnDeviceFineTuningBuilder UsePostgreSql(this IOnDeviceFineTuningBuilder builder, string connectionString)
    {
        ArgumentException.ThrowIfNullOrEmpty(connectionString);
        return builder.UsePostgreSql(o => o.ConnectionString = connectionString);
    }

    /// <summary>
    /// Keeps the model's feedback, version registry and serving pointer in PostgreSQL: the configuration section
    /// <c>PostgreSql</c> (<c>PostgreSql:&lt;name&gt;</c> for a named model; unknown keys fail start-up) when the app
    /// has an <see cref="IConfiguration"/>, then <paramref name="configure"/>. Every instance writes and reads the
    /// same feedback, only the holder of the trainer lease runs rounds, and every instance serves the version the
    /// shared pointer names within seconds. Options are validated at start.
    /// </summary>
    public static IOnDeviceFineTuningBuilder UsePostgreSql(this IOnDeviceFineTuningBuilder builder, Action<PostgreSqlFineTuningOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var name = builder.Name;
        var services = builder.Services;
        var section = name.Length == 0 ? PostgreSqlFineTuningOptions.DefaultSectionName : $"{PostgreSqlFineTuningOptions.DefaultSectionName}:{name}";
        var options = services.AddOptionsWithValidateOnStart<PostgreSqlFineTuningOptions, PostgreSqlOptionsValidator>(name)
            .Configure<IServiceProvider>((o, sp) =>
            {
                o.ConfigurationPath = section;
                sp.GetService<IConfiguration>()?.GetSection(section).Bind(o, b => b.ErrorOnUnknownConfiguration = true);
            });
        if (configure is not null) options.Configure(configure);

        // Replaces the SQLite store of this model (registered by AddOnDeviceFineTuning).
        foreach (var d in services.Where(d => d.ServiceType == typeof(IFeedbackStore) && Equals(d.ServiceKey, name)).ToList()) services.Remove(d);
        services.AddKeyedSingleton(name, (sp, _) =>
        {
            var o = sp.GetRequiredService<IOptionsMonitor<PostgreSqlFineTuningOptions>>().Get(name);
            return new PostgreSqlDatabase(o.ConnectionString, PostgreSqlOptionsValidator.SchemaName(name, o));
        });
        services.AddKeyedSingleton(name, (sp, _) =>
        {
            var o = sp.GetRequiredService<IOptionsMonitor<PostgreSqlFineTuningOptions>>().Get(name);
            return new PostgreSqlTrainerLease(sp.GetRequiredKeyedService<PostgreSqlDatabase>(name), o.LeaseDuration, Logger(sp));
        });
        services.AddKeyedSingleton<ITrainerLease>(name, (sp, _) => sp.GetRequiredKeyedService<PostgreSqlTrainerLease>(name));
        services.AddKeyedSingleton<IFeedbackStore>(name, (sp, _) =>
        {
            var lease = sp.GetRequiredKeyedService<PostgreSqlTrainerLease>(name);
            return new PostgreSqlFeedbackStore(sp.GetRequiredKeyedService<PostgreSqlDatabase>(name), ownsDatabase: false,
                sp.GetRequiredService<TimeProvider>(), lease.FenceAsync);
        });
        services.AddKeyedSingleton<IVersionFileStore>(name, (sp, _) =>
        {
            var o = sp.GetRequiredService<IOptionsMonitor<PostgreSqlFineTuningOptions>>().Get(name);
            var db = sp.GetRequiredKeyedService<PostgreSqlDatabase>(name);
            return o.VersionFiles == VersionFileStorage.SharedFolder
                ? new SharedFolderVersionFileStore(Path.Combine(o.SharedFolderPath!, db.Schema))
                : new PostgreSqlBlobVersionFileStore(db, o.MaxBlobBytes);
        });
        services.AddKeyedSingleton<ISharedVersionRegistry>(name, (sp, _) =>
        {
            var db = sp.GetRequiredKeyedService<PostgreSqlDatabase>(name);
            // The tables must exist before the replica first synchronises (the feedback store creates them).
            _ = sp.GetRequiredKeyedService<IFeedbackStore>(name);
            return new PostgreSqlVersionRegistry(db, sp.GetRequiredKeyedService<IVersionFileStore>(name), sp.GetRequiredKeyedService<PostgreSqlTrainerLease>(name), Logger(sp));
        });
        services.AddKeyedSingleton(name, (sp, _) =>
        {
            var o = sp.GetRequiredService<IOptionsMonitor<PostgreSqlFineTuningOptions>>().Get(name);
            return new PostgreSqlVersionFollower(sp.GetRequiredKeyedService<FineTunedModel>(name), sp.GetRequiredKeyedService<PostgreSqlDatabase>(name),
                sp.GetRequiredKeyedService<ISharedVersionRegistry>(name), o.PollInterval, Logger(sp));
        });
        services.AddSingleton<IHostedService>(sp => sp.GetRequiredKeyedService<PostgreSqlVersionFollower>(name));
        return builder;
    }

    private static ILogger Logger(IServiceProvider sp) =>
        (ILogger?)sp.GetService<ILoggerFactory>()?.CreateLogger("OnnxTune.Hosting.PostgreSql") ?? NullLogger.Instance;
}
