using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using OnnxTune.Hosting;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Hosting.Internal;
using OnnxTune.Hosting.Training;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers on-device fine-tuning of ONNX models in a Generic Host app.</summary>
public static class OnDeviceFineTuningServiceCollectionExtensions
{
    /// <summary>
    /// Registers the default model: <see cref="IModelHandle"/>, <see cref="IFeedbackWriter"/>, <see cref="IFeedbackStore"/>,
    /// <see cref="ModelVersionStore"/>, <see cref="ITextClassifier"/> (text models; unkeyed and keyed by ""), the training engine, the background fine-tuning service and a health check.
    /// </summary>
    public static IOnDeviceFineTuningBuilder AddOnDeviceFineTuning(this IServiceCollection services, Action<OnDeviceFineTuningOptions>? configure = null) =>
        services.AddOnDeviceFineTuning(Options.Options.DefaultName, configure);

    /// <summary>
    /// Registers a named model (several models per app); its services are keyed by <paramref name="name"/>.
    /// Calling it again for the same name only adds <paramref name="configure"/>.
    /// </summary>
    public static IOnDeviceFineTuningBuilder AddOnDeviceFineTuning(this IServiceCollection services, string name, Action<OnDeviceFineTuningOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length > 0 && (name.Contains(':', StringComparison.Ordinal) || name.Trim() != name))
            throw new ArgumentException($"Model name '{name}' may not contain ':' or surrounding spaces (it is a configuration section name).", nameof(name));

        var builder = new OnDeviceFineTuningBuilder(name, services);
        var optionsBuilder = services.AddOptionsWithValidateOnStart<OnDeviceFineTuningOptions, OnDeviceFineTuningOptionsValidator>(name);
        if (configure is not null) optionsBuilder.Configure(configure);

        var registry = GetRegistry(services);
        if (!registry.Add(name)) return builder;
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<OnDeviceFineTuningOptions>, SharedStoreOptionsValidator>());

        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<FineTuningEvents>();
        services.TryAddSingleton(sp => new OnnxTuneMetrics(sp.GetService<System.Diagnostics.Metrics.IMeterFactory>()));

        services.TryAddKeyedSingleton<IFeedbackStore>(name, (sp, _) =>
        {
            var o = sp.GetRequiredService<IOptionsMonitor<OnDeviceFineTuningOptions>>().Get(name);
            return new SqliteFeedbackStore(o.FeedbackDatabasePath ?? Path.Combine(o.ModelStorePath, "feedback.db"), sp.GetRequiredService<TimeProvider>());
        });
        // Text models (a tokenizer in the manifest) get the BERT encoder and a text classifier; others pass tensors through.
        services.TryAddKeyedSingleton(name, (sp, _) => new TextModelServices(sp.GetRequiredKeyedService<FineTunedModel>(name)));
        services.TryAddKeyedSingleton<IFeedbackEncoder>(name, (sp, _) => sp.GetRequiredKeyedService<TextModelServices>(name).CreateEncoder());
        services.TryAddKeyedSingleton<ITextClassifier>(name, (sp, _) => sp.GetRequiredKeyedService<TextModelServices>(name).CreateClassifier());
        // The training engine; an app (or a text package) may register its own IFineTuningRound for the name instead.
        services.TryAddKeyedSingleton<IFineTuningRound>(name, (sp, _) => new TrainingEngineFineTuningRound(
            sp.GetRequiredKeyedService<IFeedbackEncoder>(name),
            (ILogger?)sp.GetService<ILoggerFactory>()?.CreateLogger("OnnxTune.Hosting") ?? NullLogger.Instance));
        services.TryAddKeyedSingleton<IModelEvaluator>(name, (sp, _) =>
        {
            var m = sp.GetRequiredKeyedService<FineTunedModel>(name);
            return new AccuracyEvaluator(sp.GetRequiredKeyedService<IFeedbackEncoder>(name), m.Manifest.Loss.OutputName, m.Options.TrainingThreads);
        });
        services.AddKeyedSingleton(name, (sp, _) => new FineTunedModel(
            name,
            sp.GetRequiredService<IOptionsMonitor<OnDeviceFineTuningOptions>>().Get(name),
            sp.GetRequiredKeyedService<IFeedbackStore>(name),
            sp.GetRequiredService<FineTuningEvents>(),
            sp.GetRequiredService<OnnxTuneMetrics>(),
            sp.GetRequiredService<TimeProvider>(),
            (ILogger?)sp.GetService<ILoggerFactory>()?.CreateLogger("OnnxTune.Hosting") ?? NullLogger.Instance,
            sp.GetKeyedService<ISharedVersionRegistry>(name)));
        services.AddKeyedSingleton<IModelHandle>(name, (sp, _) => sp.GetRequiredKeyedService<FineTunedModel>(name).Handle);
        services.AddKeyedSingleton(name, (sp, _) => sp.GetRequiredKeyedService<FineTunedModel>(name).Writer);
        services.AddKeyedSingleton(name, (sp, _) => sp.GetRequiredKeyedService<FineTunedModel>(name).Versions);
        services.AddKeyedSingleton<IFineTuningAdmin>(name, (sp, _) => new FineTuningAdmin(sp.GetRequiredKeyedService<FineTunedModel>(name)));
        services.AddKeyedSingleton<IPersonalizationAdmin>(name, (sp, _) => new OnnxTune.Hosting.Personalization.PersonalizationAdmin(sp.GetRequiredKeyedService<FineTunedModel>(name)));
        if (name.Length == 0)
        {
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<IModelHandle>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<IFeedbackWriter>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<IFeedbackStore>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<ModelVersionStore>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<ITextClassifier>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<IFineTuningAdmin>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<IPersonalizationAdmin>(name));
        }
        services.AddSingleton<IHostedService>(sp => new FineTuningBackgroundService(
            sp.GetRequiredKeyedService<FineTunedModel>(name),
            sp.GetKeyedService<IFineTuningRound>(name),
            sp.GetRequiredKeyedService<IModelEvaluator>(name),
            sp.GetKeyedServices<IValidationGate>(name),
            sp.GetKeyedService<ITrainerLease>(name)));
        // The drift watch: live signals of a newly promoted version against its predecessor, automatic rollback.
        services.AddKeyedSingleton(name, (sp, _) => new DriftWatch(sp.GetRequiredKeyedService<FineTunedModel>(name)));
        services.AddSingleton<IHostedService>(sp => sp.GetRequiredKeyedService<DriftWatch>(name));
        services.AddHealthChecks().Add(new HealthCheckRegistration(
            HealthCheckName(name),
            sp => new OnDeviceFineTuningHealthCheck(sp.GetRequiredKeyedService<FineTunedModel>(name), sp.GetKeyedService<DriftWatch>(name)),
            HealthStatus.Unhealthy,
            ["onnxtune"]));
        return builder;
    }

    internal static string HealthCheckName(string name) => name.Length == 0 ? "onnxtune" : $"onnxtune:{name}";

    private static HashSet<string> GetRegistry(IServiceCollection services)
    {
        foreach (var d in services)
            if (d.ServiceType == typeof(OnDeviceFineTuningRegistry) && d.ImplementationInstance is OnDeviceFineTuningRegistry r)
                return r.Names;
        var registry = new OnDeviceFineTuningRegistry();
        services.AddSingleton(registry);
        return registry.Names;
    }
}

/// <summary>Model names registered in a service collection (so a second call for a name adds no services).</summary>
internal sealed class OnDeviceFineTuningRegistry
{
    public HashSet<string> Names { get; } = new(StringComparer.Ordinal);
}
