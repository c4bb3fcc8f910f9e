using System.Text.RegularExpressions;
using Onnx;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Artifacts;

/// <summary>
/// Chooses trainable parameters among a model's float initializers by name or glob (<c>*</c>, <c>?</c>):
/// no trainable globs means every float initializer; frozen globs are removed afterwards. A glob that matches
/// nothing is an error, so a typo never silently trains the wrong thing.
/// </summary>
public sealed record ParameterSelection
{
    /// <summary>Globs of parameters to train (empty: all float initializers).</summary>
    public IReadOnlyList<string> Trainable { get; init; } = [];

    /// <summary>Globs of parameters to keep frozen.</summary>
    public IReadOnlyList<string> Frozen { get; init; } = [];

    /// <summary>Explicit names resolved elsewhere (e.g. by layer selection), added to the trainable set.</summary>
    public IReadOnlyList<string> TrainableNames { get; init; } = [];

    /// <summary>Splits the model's float initializers into trainable and frozen, in graph order.</summary>
    /// <exception cref="OnnxTuneException">A glob matches no float initializer, or nothing is left to train.</exception>
    public (List<string> Trainable, List<string> Frozen) Resolve(ModelProto model)
    {
        var candidates = model.Graph.Initializer
            .Where(t => TensorProtos.IsFloating((DataType)t.DataType))
            .Select(t => t.Name).ToList();
        var trainable = new HashSet<string>(StringComparer.Ordinal);
        if (Trainable.Count == 0 && TrainableNames.Count == 0) trainable.UnionWith(candidates);
        foreach (var glob in Trainable) trainable.UnionWith(Match(glob, candidates, "--trainable"));
        foreach (var name in TrainableNames)
        {
            if (!candidates.Contains(name))
                throw new OnnxTuneException($"Trainable parameter '{name}' is not a float initializer of the model.");
            trainable.Add(name);
        }
        foreach (var glob in Frozen) trainable.ExceptWith(Match(glob, candidates, "--frozen"));
        if (trainable.Count == 0)
            throw new OnnxTuneException("No trainable parameters are left after applying the trainable and frozen selections.");
        return (candidates.Where(trainable.Contains).ToList(), candidates.Where(c => !trainable.Contains(c)).ToList());
    }

    private static IEnumerable<string> Match(string glob, List<string> candidates, string flag)
    {
        var regex = ParameterGlob.ToRegex(glob);
        var hits = candidates.Where(c => regex.IsMatch(c)).ToList();
        if (hits.Count == 0)
        {
            var sample = string.Join(", ", candidates.Take(8));
            throw new OnnxTuneException($"{flag} '{glob}' matches no float initializer of the model (some names: {sample}{(candidates.Count > 8 ? ", ..." : "")}).");
        }
        return hits;
    }
}
