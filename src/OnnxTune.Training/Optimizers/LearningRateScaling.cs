using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Training.Optimizers;

/// <summary>Resolves <see cref="TrainingEngineOptions.LearningRateScales"/> patterns to one factor per parameter.</summary>
internal static class LearningRateScaling
{
    /// <summary>One factor per parameter (in <paramref name="parameters"/> order), or null when every factor is 1.</summary>
    /// <exception cref="TrainingOptionsException">A factor is negative or not finite, or a pattern matches no parameter.</exception>
    public static double[]? Resolve(IReadOnlyDictionary<string, double>? scales, IReadOnlyList<string> parameters)
    {
        if (scales is null || scales.Count == 0) return null;
        var patterns = scales.Select(kv =>
        {
            if (!double.IsFinite(kv.Value) || kv.Value < 0)
                throw new TrainingOptionsException($"LearningRateScales['{kv.Key}'] is {kv.Value}; a factor must be finite and >= 0.");
            return (kv.Key, kv.Value, Regex: ParameterGlob.ToRegex(kv.Key));
        }).OrderByDescending(p => p.Key.Length).ToList();
        var result = new double[parameters.Count];
        var used = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < parameters.Count; i++)
        {
            result[i] = 1.0;
            foreach (var (key, value, regex) in patterns)
                if (regex.IsMatch(parameters[i]))
                {
                    result[i] = value;
                    used.Add(key);
                    break;
                }
        }
        if (patterns.FirstOrDefault(p => !used.Contains(p.Key)) is { Key: { } unused })
            throw new TrainingOptionsException($"LearningRateScales pattern '{unused}' matches no trainable parameter.");
        return result.All(v => v == 1.0) ? null : result;
    }
}
