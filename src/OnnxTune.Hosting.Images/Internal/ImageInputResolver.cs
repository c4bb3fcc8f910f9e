using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Hosting.Images.Internal;

/// <summary>Finds the image input in the artifacts manifest and reconciles its shape with the options.</summary>
internal static class ImageInputResolver
{
    /// <exception cref="ImageModelException">No usable image input, a channel count other than 1 or 3, or a size the options contradict.</exception>
    public static ImageInputShape Resolve(string modelName, ArtifactManifest manifest, ImagePreprocessingOptions o)
    {
        var p = o.ConfigurationPath;
        var model = modelName.Length == 0 ? "The default model" : $"Model '{modelName}'";
        TensorSpec input;
        if (o.InputName is { Length: > 0 } name)
        {
            input = manifest.Inputs.FirstOrDefault(i => i.Name == name)
                ?? throw new ImageModelException(modelName, $"{p}:InputName '{name}': {model} has no such input (inputs: {string.Join(", ", manifest.Inputs.Select(i => i.Name))}).");
        }
        else
        {
            var images = manifest.Inputs.Where(i => i.Shape.Count == 4 && i.ElementType == "float").ToList();
            if (images.Count != 1)
                throw new ImageModelException(modelName, images.Count == 0
                    ? $"{model} has no 4-D float input to take images (inputs: {Describe(manifest.Inputs)})."
                    : $"{model} has {images.Count} 4-D float inputs ({string.Join(", ", images.Select(i => i.Name))}); set {p}:InputName to the image input.");
            input = images[0];
        }
        if (input.ElementType != "float" || input.Shape.Count != 4)
            throw new ImageModelException(modelName, $"{model}: input '{input.Name}' is {input.ElementType} [{string.Join(",", input.Shape)}]; an image input is float with 4 dims.");
        if (manifest.Inputs.Count != 1)
            throw new ImageModelException(modelName,
                $"{model} has inputs besides '{input.Name}' ({string.Join(", ", manifest.Inputs.Where(i => i.Name != input.Name).Select(i => i.Name))}); image feedback and predictions fill only the image input.");

        var dims = input.FixedDims;
        var (cAxis, hAxis, wAxis) = o.Layout == ImageLayout.Nchw ? (1, 2, 3) : (3, 1, 2);
        var channels = dims[cAxis];
        if (channels is not (1 or 3))
            throw new ImageModelException(modelName,
                $"{model}: input '{input.Name}' [{string.Join(",", input.Shape)}] has {(channels < 0 ? $"a symbolic channel dim '{input.Shape[cAxis]}'" : $"{channels} channels")} at axis {cAxis} ({p}:Layout {o.Layout}); images give 1 (grayscale) or 3 (colour) channels.");
        var height = Size(modelName, model, input, dims[hAxis], hAxis, o.Height, $"{p}:Height");
        var width = Size(modelName, model, input, dims[wAxis], wAxis, o.Width, $"{p}:Width");
        var errors = ImagePreprocessor.Validate(o, (int)channels);
        if (errors.Count > 0) throw new ImageModelException(modelName, string.Join(" ", errors));
        return new ImageInputShape(input.Name, o.Layout, (int)channels, height, width);
    }

    private static int Size(string modelName, string model, TensorSpec input, long dim, int axis, int? option, string key)
    {
        if (dim < 0)
            return option ?? throw new ImageModelException(modelName,
                $"{model}: input '{input.Name}' [{string.Join(",", input.Shape)}] has a symbolic dim '{input.Shape[axis]}' at axis {axis}; set {key}.");
        if (dim is 0 or > 16384)
            throw new ImageModelException(modelName, $"{model}: input '{input.Name}' has dim {dim} at axis {axis}; image sizes are 1 to 16384.");
        if (option is { } v && v != dim)
            throw new ImageModelException(modelName, $"{key} is {v}, but input '{input.Name}' of {model} has a fixed {dim} at axis {axis}; remove {key} or set it to {dim}.");
        return (int)dim;
    }

    private static string Describe(IReadOnlyList<TensorSpec> inputs) =>
        inputs.Count == 0 ? "none" : string.Join(", ", inputs.Select(i => $"{i.Name} {i.ElementType} [{string.Join(",", i.Shape)}]"));
}
