using System.Security.Cryptography;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Partitioning;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Caching;

namespace OnnxTune.Hosting.Training;

/// <summary>
/// Frozen-prefix artifacts derived once from a model's artifacts: the inference model is split where the frozen part
/// meets the trainable part, training artifacts are built from the suffix with the same loss and optimizer, and the
/// activations of the round's records are kept in a file between rounds, so a round runs the frozen layers once per
/// new record instead of once per record and epoch. Everything lives under
/// <c>&lt;ModelStorePath&gt;/prefix-cache/&lt;hash of the artifacts' manifest&gt;/</c>, built in a temporary folder and
/// renamed into place.
/// </summary>
internal sealed class PrefixCachedArtifacts
{
    private const string SplitFolder = "split";
    private const string ArtifactsFolder = "artifacts";
    private const string ActivationsFile = "activations.safetensors";
    private const string DeclinedFile = "declined.txt";

    private PrefixCachedArtifacts(string directory, PrefixSplitManifest split)
    {
        Directory = directory;
        Split = split;
    }

    /// <summary>The folder holding the split, the suffix artifacts and the activations file.</summary>
    public string Directory { get; }

    /// <summary>The split's manifest (frontier tensors).</summary>
    public PrefixSplitManifest Split { get; }

    /// <summary>The suffix training artifacts.</summary>
    public string ArtifactsDirectory => Path.Combine(Directory, ArtifactsFolder);

    /// <summary>
    /// The cached artifacts for <paramref name="artifactsPath"/>, built on first use; null (with the reason) when the
    /// model has no frozen prefix the cache can use.
    /// </summary>
    public static PrefixCachedArtifacts? Prepare(string artifactsPath, ArtifactManifest manifest, string cacheRoot, out string? declined)
    {
        declined = Ineligible(manifest);
        if (declined is not null) return null;
        var key = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(artifactsPath, ArtifactFiles.ManifestFileName))))[..16];
        var directory = Path.Combine(cacheRoot, key);
        var declinedPath = Path.Combine(directory, DeclinedFile);
        if (File.Exists(declinedPath))
        {
            declined = File.ReadAllText(declinedPath);
            return null;
        }
        if (System.IO.Directory.Exists(Path.Combine(directory, ArtifactsFolder)) && System.IO.Directory.Exists(Path.Combine(directory, SplitFolder)))
            return new PrefixCachedArtifacts(directory, PrefixSplitManifest.Load(Path.Combine(directory, SplitFolder)));

        var temp = directory + ".tmp-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, recursive: true);
        System.IO.Directory.CreateDirectory(temp);
        try
        {
            var model = OnnxModelReader.Load(Path.Combine(artifactsPath, manifest.Files.InferenceModel));
            var trainable = manifest.TrainableParameters.Select(p => p.Name).ToList();
            PrefixSplit? split = null;
            try
            {
                split = FrozenPrefixSplitter.Split(model, trainable);
            }
            catch (PrefixSplitException e)
            {
                declined = e.Message;
            }
            if (split is not null)
            {
                var built = ArtifactBuilder.Build(split.Suffix, new ArtifactOptions
                {
                    Selection = new ParameterSelection { TrainableNames = trainable },
                    Loss = manifest.Loss,
                    Optimizer = manifest.Optimizer,
                    Properties = manifest.Properties,
                });
                declined = Mismatch(manifest, built.Manifest);
                if (declined is null)
                {
                    split.Save(Path.Combine(temp, SplitFolder));
                    ArtifactBuilder.Save(built, Path.Combine(temp, ArtifactsFolder));
                }
            }
            if (declined is not null)
            {
                // Remember the answer so later rounds do not split the model again.
                System.IO.Directory.Delete(temp, recursive: true);
                System.IO.Directory.CreateDirectory(directory);
                AtomicFile.WriteAllText(declinedPath, declined);
                return null;
            }
            if (System.IO.Directory.Exists(directory)) System.IO.Directory.Delete(directory, recursive: true);
            System.IO.Directory.Move(temp, directory);
            return new PrefixCachedArtifacts(directory, PrefixSplitManifest.Load(Path.Combine(directory, SplitFolder)));
        }
        finally
        {
            if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, recursive: true);
        }
    }

    /// <summary>Opens the activation cache (its file reloaded when it was written for this prefix).</summary>
    public ActivationCache OpenCache(int threads) =>
        ActivationCache.Open(Path.Combine(Directory, SplitFolder), new ActivationCacheOptions
        {
            FilePath = Path.Combine(Directory, ActivationsFile),
            IntraOpThreads = threads,
        });

    private static string? Ineligible(ArtifactManifest manifest)
    {
        if (manifest.FrozenParameters.Count == 0) return "every parameter trains, so there is no frozen prefix";
        if (manifest.NonTrainableState.Count > 0) return "the model has BatchNormalization running statistics";
        var notFloat = manifest.TrainableParameters.FirstOrDefault(p => p.ElementType != "float");
        return notFloat is null ? null : $"trainable parameter '{notFloat.Name}' is {notFloat.ElementType}";
    }

    private static string? Mismatch(ArtifactManifest full, ArtifactManifest suffix)
    {
        var a = full.TrainableParameters.Select(p => (p.Name, string.Join(",", p.Shape))).ToList();
        var b = suffix.TrainableParameters.Select(p => (p.Name, string.Join(",", p.Shape))).ToList();
        return a.SequenceEqual(b) ? null : "the suffix artifacts would not train the same parameters as the model's artifacts";
    }
}
