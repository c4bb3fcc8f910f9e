using Microsoft.Extensions.Options;
using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Hosting.Images.Internal;

/// <summary>
/// Validates <see cref="ImagePreprocessingOptions"/> at start, each error naming its key; when the model's artifacts
/// manifest can be read, also checks the options against its image input (channels, size, mean/std lengths).
/// </summary>
internal sealed class ImageOptionsValidator(IOptionsMonitor<OnDeviceFineTuningOptions> models) : IValidateOptions<ImagePreprocessingOptions>
{
    public ValidateOptionsResult Validate(string? name, ImagePreprocessingOptions options)
    {
        var errors = ImagePreprocessor.Validate(options, channels: 0);
        if (errors.Count > 0) return ValidateOptionsResult.Fail(errors);
        ArtifactManifest manifest;
        try
        {
            manifest = ArtifactManifest.Load(models.Get(name).ArtifactsPath);
        }
        catch (Exception e) when (e is OnnxTuneException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            return ValidateOptionsResult.Success; // the hosting options validation reports unreadable artifacts
        }
        try
        {
            _ = ImageInputResolver.Resolve(name ?? "", manifest, options);
            return ValidateOptionsResult.Success;
        }
        catch (ImageModelException e)
        {
            return ValidateOptionsResult.Fail(e.Message);
        }
    }
}
