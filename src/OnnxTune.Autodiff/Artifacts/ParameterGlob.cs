using System.Text.RegularExpressions;

namespace OnnxTune.Autodiff.Artifacts;

/// <summary>Parameter-name globs as every OnnxTune option reads them: <c>*</c> any run of characters, <c>?</c> one; the rest literal, whole name.</summary>
public static class ParameterGlob
{
    /// <summary>The regular expression that matches whole names against <paramref name="glob"/>.</summary>
    public static Regex ToRegex(string glob)
    {
        ArgumentNullException.ThrowIfNull(glob);
        return new Regex("^" + Regex.Escape(glob).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$", RegexOptions.CultureInvariant);
    }
}
