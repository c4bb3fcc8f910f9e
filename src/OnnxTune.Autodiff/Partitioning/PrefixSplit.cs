using System.Text.Json;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Autodiff.Partitioning;

/// <summary>The result of <see cref="FrozenPrefixSplitter.Split"/>.</summary>
/// <param name="Prefix">Data inputs → frontier tensors (frozen parameters only; run it with a plain inference session).</param>
/// <param name="Suffix">Frontier tensors (+ passthrough data inputs) → the original outputs; build training artifacts from it.</param>
/// <param name="Manifest">What was split where (saved as <see cref="PrefixSplitManifest.FileName"/>).</param>
public sealed record PrefixSplit(ModelProto Prefix, ModelProto Suffix, PrefixSplitManifest Manifest)
{
    /// <summary>File name of the prefix model written by <see cref="Save"/>.</summary>
    public const string PrefixFileName = "prefix_model.onnx";

    /// <summary>File name of the suffix model written by <see cref="Save"/>.</summary>
    public const string SuffixFileName = "suffix_model.onnx";

    /// <summary>Writes the prefix, suffix and manifest into <paramref name="directory"/> (each file atomically, manifest last).</summary>
    public void Save(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory.CreateDirectory(directory);
        OnnxModelWriter.Save(Prefix, Path.Combine(directory, PrefixFileName));
        OnnxModelWriter.Save(Suffix, Path.Combine(directory, SuffixFileName));
        Manifest.Save(directory);
    }
}

/// <summary>
/// Describes a frozen-prefix split (<c>prefix_split.json</c>): the frontier tensors the prefix outputs and the
/// suffix reads, the data inputs the suffix still reads directly, and the hash that keys activation caches.
/// </summary>
public sealed record PrefixSplitManifest
{
    /// <summary>File name of the manifest.</summary>
    public const string FileName = "prefix_split.json";

    /// <summary>Format version; bumped on incompatible change.</summary>
    public int FormatVersion { get; init; } = 1;

    /// <summary>SHA-256 (lower-case hex) of the serialized prefix model; a cache built by another prefix is stale.</summary>
    public string PrefixSha256 { get; init; } = "";

    /// <summary>Frontier tensors in suffix-input order: name, element type, shape (dim 0 is the batch; <c>?</c> unknown).</summary>
    public IReadOnlyList<TensorSpec> Frontier { get; init; } = [];

    /// <summary>Data inputs of the source model that the suffix reads directly.</summary>
    public IReadOnlyList<TensorSpec> PassthroughInputs { get; init; } = [];

    /// <summary>All data inputs of the source model.</summary>
    public IReadOnlyList<TensorSpec> Inputs { get; init; } = [];

    /// <summary>The trainable parameters the split was made for.</summary>
    public IReadOnlyList<string> TrainableParameters { get; init; } = [];

    /// <summary>Nodes in the prefix model.</summary>
    public int PrefixNodeCount { get; init; }

    /// <summary>Nodes in the suffix model.</summary>
    public int SuffixNodeCount { get; init; }

    /// <summary>Suffix nodes that depend on no trainable parameter (shape arithmetic and constants recomputed there).</summary>
    public int RecomputedNodeCount { get; init; }

    /// <summary>Reads <see cref="FileName"/> from a folder.</summary>
    /// <exception cref="PrefixSplitException">The file is missing or not valid JSON.</exception>
    public static PrefixSplitManifest Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
            throw new PrefixSplitException($"'{directory}' holds no {FileName}.");
        try
        {
            var m = JsonSerializer.Deserialize<PrefixSplitManifest>(File.ReadAllText(path), ArtifactManifest.JsonOptions)
                ?? throw new PrefixSplitException($"{path} is empty.");
            if (m.FormatVersion != 1)
                throw new PrefixSplitException($"{path}: format_version {m.FormatVersion} is not supported (expected 1).");
            return m;
        }
        catch (JsonException e)
        {
            throw new PrefixSplitException($"{path} is not valid split JSON: {e.Message}", e);
        }
    }

    /// <summary>Writes <see cref="FileName"/> atomically into <paramref name="directory"/>.</summary>
    public void Save(string directory) =>
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(this, ArtifactManifest.JsonOptions));
}

/// <summary>A model cannot be split into a frozen prefix and a trainable suffix (the message says why).</summary>
public sealed class PrefixSplitException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public PrefixSplitException(string message, Exception? inner = null) : base(message, inner) { }
}
