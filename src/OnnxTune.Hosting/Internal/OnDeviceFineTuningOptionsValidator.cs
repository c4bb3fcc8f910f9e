using Microsoft.Extensions.Options;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.Trained;

namespace OnnxTune.Hosting.Internal;

/// <summary>Per-value rules, generated from the data annotations on <see cref="OnDeviceFineTuningOptions"/>.</summary>
[OptionsValidator]
internal sealed partial class OnDeviceFineTuningOptionsAnnotationsValidator : IValidateOptions<OnDeviceFineTuningOptions>
{
}

/// <summary>
/// Runs the generated per-value rules, then the rules between values and the artifacts-folder check. Every
/// message starts with the configuration key at fault (for example <c>OnDeviceFineTuning:intent:BatchSize</c>).
/// </summary>
internal sealed class OnDeviceFineTuningOptionsValidator : IValidateOptions<OnDeviceFineTuningOptions>
{
    private readonly OnDeviceFineTuningOptionsAnnotationsValidator _annotations = new();

    public ValidateOptionsResult Validate(string? name, OnDeviceFineTuningOptions options)
    {
        var prefix = options.ConfigurationPath ?? KeyPrefix(name, OnDeviceFineTuningOptions.DefaultSectionName);
        var builder = new ValidateOptionsResultBuilder();

        // The generated validator names members "<name>.<Member>"; pass a marker and rewrite it into the key.
        const string marker = "\u0001";
        var generated = _annotations.Validate(marker, options);
        if (generated.Failed)
        {
            foreach (var failure in generated.Failures)
                builder.AddError(failure.Replace(marker + ".", prefix + ":", StringComparison.Ordinal).Replace(marker, prefix, StringComparison.Ordinal));
        }

        if (options.ModelStorePath.Length > 0 && options.ArtifactsPath.Length > 0 &&
            Path.GetFullPath(options.ModelStorePath) == Path.GetFullPath(options.ArtifactsPath))
            builder.AddError($"{prefix}:ModelStorePath must differ from {prefix}:ArtifactsPath (the artifacts folder is read-only input).");
        if (options.OnlyWhenIdle && options.IdleWindow >= options.MaxInterval)
            builder.AddError($"{prefix}:IdleWindow ({options.IdleWindow}) must be shorter than {prefix}:MaxInterval ({options.MaxInterval}) when OnlyWhenIdle is set.");
        if (options.CheckInterval > options.MaxInterval)
            builder.AddError($"{prefix}:CheckInterval ({options.CheckInterval}) must not exceed {prefix}:MaxInterval ({options.MaxInterval}).");
        if (options.Labels is { } labels)
        {
            if (labels.Count == 0)
                builder.AddError($"{prefix}:Labels is empty; leave it unset or list the classes.");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var l in labels)
                if (string.IsNullOrWhiteSpace(l) || !seen.Add(l))
                    builder.AddError($"{prefix}:Labels contains an empty or duplicate label '{l}'.");
        }
        if (options.GoldenSetPath is { Length: > 0 } golden && !File.Exists(golden))
            builder.AddError($"{prefix}:GoldenSetPath: the file '{golden}' does not exist.");

        if (options.ReplaySetPath is { Length: > 0 } replay && !File.Exists(replay))
            builder.AddError($"{prefix}:ReplaySetPath: the file '{replay}' does not exist.");
        if (options.TrainedModelPath is { Length: > 0 } trained)
        {
            if (!File.Exists(Path.Combine(trained, TrainedModelFolder.ModelFileName)) || !Directory.Exists(Path.Combine(trained, TrainedModelFolder.CheckpointFolderName)))
                builder.AddError($"{prefix}:TrainedModelPath: '{trained}' must hold {TrainedModelFolder.ModelFileName} and {TrainedModelFolder.CheckpointFolderName}/ (what 'onnxtune train --out' writes).");
        }
        if (options.HeadParameters is null || options.HeadParameters.Any(string.IsNullOrWhiteSpace))
            builder.AddError($"{prefix}:HeadParameters must be a list of non-empty globs.");

        if (options.ArtifactsPath.Length > 0)
        {
            if (!Directory.Exists(options.ArtifactsPath))
                builder.AddError($"{prefix}:ArtifactsPath: the folder '{options.ArtifactsPath}' does not exist or cannot be read.");
            else
            {
                try
                {
                    var manifest = ArtifactManifest.Load(options.ArtifactsPath);
                    var inference = Path.Combine(options.ArtifactsPath, manifest.Files.InferenceModel);
                    if (!File.Exists(inference))
                        builder.AddError($"{prefix}:ArtifactsPath: the inference model '{inference}' listed in {ArtifactFiles.ManifestFileName} is missing.");
                }
                catch (Exception e) when (e is OnnxTuneException or IOException or UnauthorizedAccessException)
                {
                    builder.AddError($"{prefix}:ArtifactsPath: {e.Message}");
                }
            }
        }
        return builder.Build();
    }

    internal static string KeyPrefix(string? name, string section) =>
        string.IsNullOrEmpty(name) ? section : $"{section}:{name}";
}
