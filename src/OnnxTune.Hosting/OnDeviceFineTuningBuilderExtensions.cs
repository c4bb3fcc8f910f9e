using Microsoft.Extensions.Options;
using OnnxTune.Hosting;
using OnnxTune.Hosting.Internal;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Features of a registered fine-tuned model.</summary>
public static class OnDeviceFineTuningBuilderExtensions
{
    /// <summary>
    /// Binds the options from configuration: section <paramref name="sectionPath"/> for the default model, or
    /// <c>&lt;sectionPath&gt;:&lt;name&gt;</c> for a named one. Unknown keys fail start-up.
    /// </summary>
    public static IOnDeviceFineTuningBuilder BindConfiguration(this IOnDeviceFineTuningBuilder builder, string sectionPath = OnDeviceFineTuningOptions.DefaultSectionName)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrEmpty(sectionPath);
        var path = OnDeviceFineTuningOptionsValidator.KeyPrefix(builder.Name, sectionPath);
        builder.Services.AddOptions<OnDeviceFineTuningOptions>(builder.Name)
            .BindConfiguration(path, o => o.ErrorOnUnknownConfiguration = true)
            .Configure(o => o.ConfigurationPath = path);
        return builder;
    }

    /// <summary>Adds an app-supplied gate; every gate must pass for a candidate to be promoted.</summary>
    public static IOnDeviceFineTuningBuilder AddValidationGate<TGate>(this IOnDeviceFineTuningBuilder builder)
        where TGate : class, IValidationGate
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddKeyedSingleton<IValidationGate, TGate>(builder.Name);
        return builder;
    }

    /// <summary>Configures the options in code (applied after configuration binding registered earlier).</summary>
    public static IOnDeviceFineTuningBuilder Configure(this IOnDeviceFineTuningBuilder builder, Action<OnDeviceFineTuningOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.Configure(builder.Name, configure);
        return builder;
    }
}
