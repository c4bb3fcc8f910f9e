using System.Collections.Concurrent;
using System.Security.Cryptography;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Hosting.Internal;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Artifacts;

namespace OnnxTune.Hosting.Personalization;

/// <summary>What adapters on one shared model need: LoRA training artifacts over it and the adapter-ready base model ORT serves them with.</summary>
/// <param name="Fingerprint">SHA-256 of the shared model file.</param>
/// <param name="Directory">The folder (artifacts/, adapter-base.onnx, prefix-cache/).</param>
/// <param name="Manifest">The LoRA artifacts' manifest.</param>
internal sealed record AdapterBase(string Fingerprint, string Directory, ArtifactManifest Manifest)
{
    public string ArtifactsPath => Path.Combine(Directory, "artifacts");
    public string AdapterBaseModelPath => Path.Combine(Directory, "adapter-base.onnx");
    public string PrefixCachePath => Path.Combine(Directory, "prefix-cache");
    public string InitialCheckpointPath => Path.Combine(ArtifactsPath, Manifest.Files.Checkpoint);
}

/// <summary>
/// Builds (once per shared model, under <c>personalization/bases/&lt;fingerprint&gt;</c>, renamed into place) the
/// LoRA artifacts adapter rounds train and the adapter-ready base model adapters are served on. Adapters sit on
/// <see cref="PersonalizationOptions.AdapterTargets"/>, by default on every trainable MatMul/Gemm weight of the
/// model's artifacts; everything else is frozen, so an adapter file holds only LoRA tensors.
/// </summary>
internal sealed class AdapterBases(FineTunedModel model, string root)
{
    private const int KeptBases = 2;
    private readonly ConcurrentDictionary<(string Path, long Length, DateTime Written), string> _fingerprints = new();
    private readonly Lock _buildLock = new();

    private PersonalizationOptions Options => model.Options.Personalization;

    /// <summary>SHA-256 of the model file (cached by path, length and write time).</summary>
    public string Fingerprint(string modelPath)
    {
        var info = new FileInfo(modelPath);
        var key = (info.FullName, info.Length, info.LastWriteTimeUtc);
        return _fingerprints.GetOrAdd(key, static k =>
        {
            using var s = File.OpenRead(k.Path);
            return Convert.ToHexStringLower(SHA256.HashData(s));
        });
    }

    public string DirectoryOf(string fingerprint) => Path.Combine(root, fingerprint[..32]);

    /// <summary>The base for <paramref name="modelPath"/>, building it first if needed.</summary>
    public AdapterBase Ensure(string modelPath)
    {
        var fingerprint = Fingerprint(modelPath);
        var dir = DirectoryOf(fingerprint);
        lock (_buildLock)
        {
            if (!File.Exists(Path.Combine(dir, "adapter-base.onnx")))
                Build(modelPath, dir);
            return new AdapterBase(fingerprint, dir, ArtifactManifest.Load(Path.Combine(dir, "artifacts")));
        }
    }

    /// <summary>The base's folder if built (no build), for serving.</summary>
    public string? TryGetAdapterBaseModel(string fingerprint)
    {
        var path = Path.Combine(DirectoryOf(fingerprint), "adapter-base.onnx");
        return File.Exists(path) ? path : null;
    }

    /// <summary>Deletes base folders other than the newest <see cref="KeptBases"/> and those in <paramref name="inUse"/>.</summary>
    public void Prune(IReadOnlySet<string> inUse)
    {
        if (!System.IO.Directory.Exists(root)) return;
        var dirs = new DirectoryInfo(root).GetDirectories().Where(d => !d.Name.StartsWith('.')).OrderByDescending(d => d.CreationTimeUtc).ToList();
        foreach (var d in dirs.Skip(KeptBases))
        {
            if (inUse.Any(f => f.StartsWith(d.Name, StringComparison.Ordinal))) continue;
            try { d.Delete(recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    private void Build(string modelPath, string dir)
    {
        System.IO.Directory.CreateDirectory(root);
        var temp = Path.Combine(root, $".building-{Guid.NewGuid():N}");
        try
        {
            var source = OnnxModelReader.Load(modelPath);
            var main = model.Manifest;
            var lora = new LoraOptions
            {
                Targets = Options.AdapterTargets is { Count: > 0 } globs ? [.. globs] : [],
                TargetNames = Options.AdapterTargets is { Count: > 0 } ? [] : DefaultTargets(source, main),
                Rank = Options.Rank,
                Alpha = Options.Alpha,
            };
            if (lora.Targets.Count == 0 && lora.TargetNames.Count == 0)
                throw new OnnxTuneException(
                    $"Model '{model.Name}': personalization found no MatMul/Gemm weight among the artifacts' trainable parameters to put adapters on; set Personalization:AdapterTargets.");
            var artifacts = ArtifactGenerator.Generate(source, new ArtifactOptions
            {
                Loss = main.Loss,
                Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = Options.LearningRate },
                Properties = main.Properties,
                Lora = lora,
            }, Path.Combine(temp, "artifacts"));
            var adapterBase = LoraGraph.ToAdapterBase(artifacts.Inference, artifacts.Manifest.Lora, artifacts.Manifest.Lora!.TensorNames);
            OnnxModelWriter.Save(adapterBase, Path.Combine(temp, "adapter-base.onnx"));
            if (System.IO.Directory.Exists(dir)) System.IO.Directory.Delete(dir, recursive: true);
            System.IO.Directory.Move(temp, dir);
            DurableDirectory.Sync(root);
        }
        finally
        {
            if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, recursive: true);
        }
    }

    /// <summary>The artifacts' trainable 2-D parameters that the model uses only as MatMul/Gemm weights (input B).</summary>
    internal static IReadOnlyList<string> DefaultTargets(global::Onnx.ModelProto model, ArtifactManifest manifest)
    {
        var uses = new Dictionary<string, bool>(StringComparer.Ordinal);
        foreach (var n in model.Graph.Node)
            for (var i = 0; i < n.Input.Count; i++)
            {
                var ok = i == 1 && n.OpType is "MatMul" or "Gemm" && n.Domain is "" or "ai.onnx";
                uses[n.Input[i]] = uses.TryGetValue(n.Input[i], out var prior) ? prior && ok : ok;
            }
        return [.. manifest.TrainableParameters
            .Where(p => p.Shape.Count == 2 && uses.TryGetValue(p.Name, out var ok) && ok)
            .Select(p => p.Name)];
    }
}
