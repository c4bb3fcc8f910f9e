using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Images.Internal;

/// <summary>The image side of one model (keyed by its name): the preprocessor for its image input and the scored output.</summary>
internal sealed class ImageModelServices
{
    public ImageModelServices(FineTunedModel model, ImagePreprocessingOptions options)
    {
        Model = model;
        Preprocessor = new ImagePreprocessor(ImageInputResolver.Resolve(model.Name, model.Manifest, options), options);
        var manifest = model.Manifest;
        OutputName = options.OutputName is { Length: > 0 } o ? o
            : manifest.Loss.OutputName.Length > 0 ? manifest.Loss.OutputName
            : manifest.Outputs.Count > 0 ? manifest.Outputs[0].Name
            : throw new ImageModelException(model.Name, $"Model '{model.Name}': the manifest lists no output to score; set {options.ConfigurationPath}:OutputName.");
    }

    public FineTunedModel Model { get; }

    public ImagePreprocessor Preprocessor { get; }

    public string OutputName { get; }
}
