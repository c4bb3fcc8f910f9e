using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using OnnxTune.Hosting.Images;
using OnnxTune.Hosting.Images.Internal;
using OnnxTune.Hosting.Internal;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Images for a fine-tuned model: preprocessing, image feedback and an image classifier.</summary>
public static class ImageClassificationBuilderExtensions
{
    /// <summary>
    /// Adds <see cref="IImageClassifier"/>, <see cref="IImageFeedbackWriter"/> and <see cref="ImagePreprocessor"/> for
    /// the model (keyed by its name; unkeyed too for the default model). Options: the configuration section
    /// <c>ImageClassification</c> (<c>ImageClassification:&lt;name&gt;</c> for a named model; unknown keys fail
    /// start-up) when the app has an <see cref="IConfiguration"/>, then <paramref name="configure"/>; validated at
    /// start against the model's image input (channels 1 or 3, size, mean/std per channel).
    /// </summary>
    public static IOnDeviceFineTuningBuilder AddImageClassification(this IOnDeviceFineTuningBuilder builder, Action<ImagePreprocessingOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var name = builder.Name;
        var services = builder.Services;
        var section = name.Length == 0 ? ImagePreprocessingOptions.DefaultSectionName : $"{ImagePreprocessingOptions.DefaultSectionName}:{name}";
        var options = services.AddOptionsWithValidateOnStart<ImagePreprocessingOptions, ImageOptionsValidator>(name)
            .Configure<IServiceProvider>((o, sp) =>
            {
                o.ConfigurationPath = section;
                sp.GetService<IConfiguration>()?.GetSection(section).Bind(o, b => b.ErrorOnUnknownConfiguration = true);
            });
        if (configure is not null) options.Configure(configure);

        services.TryAddKeyedSingleton(name, (sp, _) => new ImageModelServices(
            sp.GetRequiredKeyedService<FineTunedModel>(name),
            sp.GetRequiredService<IOptionsMonitor<ImagePreprocessingOptions>>().Get(name)));
        services.TryAddKeyedSingleton(name, (sp, _) => sp.GetRequiredKeyedService<ImageModelServices>(name).Preprocessor);
        services.TryAddKeyedSingleton<IImageClassifier>(name, (sp, _) => new ImageClassifier(sp.GetRequiredKeyedService<ImageModelServices>(name)));
        services.TryAddKeyedSingleton<IImageFeedbackWriter>(name, (sp, _) => new ImageFeedbackWriter(sp.GetRequiredKeyedService<ImageModelServices>(name)));
        if (name.Length == 0)
        {
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<ImagePreprocessor>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<IImageClassifier>(name));
            services.TryAddSingleton(sp => sp.GetRequiredKeyedService<IImageFeedbackWriter>(name));
        }
        return builder;
    }
}
