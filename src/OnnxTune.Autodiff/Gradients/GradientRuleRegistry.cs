using System.Collections.Concurrent;
using System.Reflection;

namespace OnnxTune.Autodiff.Gradients;

/// <summary>
/// Gradient rules looked up by (domain, op type, opset). Rules in this assembly register themselves with
/// <see cref="GradientRuleAttribute"/>; ops whose outputs never carry gradients (Shape, Equal, ...) are listed as
/// non-differentiable, so paths through them are pruned instead of failing.
/// </summary>
public sealed class GradientRuleRegistry
{
    private readonly ConcurrentDictionary<(string Domain, string OpType), List<(int Since, IGradientRule Rule)>> _rules = new();
    private readonly HashSet<string> _nonDifferentiable = new(StringComparer.Ordinal)
    {
        "Shape", "Size", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
        "ArgMax", "ArgMin", "NonZero", "ConstantOfShape", "Constant", "Range", "OneHot", "IsNaN", "IsInf",
        "Floor", "Ceil", "Round", "Sign", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
        "EyeLike", "Bernoulli", "Multinomial", "TopKIndices",
    };

    private static readonly Lazy<GradientRuleRegistry> s_default = new(CreateDefault);

    /// <summary>The registry holding every built-in rule.</summary>
    public static GradientRuleRegistry Default => s_default.Value;

    /// <summary>Registers (or replaces) a rule for an op.</summary>
    public GradientRuleRegistry Register(string opType, IGradientRule rule, string domain = "", int sinceVersion = 1)
    {
        ArgumentException.ThrowIfNullOrEmpty(opType);
        ArgumentNullException.ThrowIfNull(rule);
        var list = _rules.GetOrAdd((NormalizeDomain(domain), opType), _ => []);
        lock (list)
        {
            list.RemoveAll(r => r.Since == sinceVersion);
            list.Add((sinceVersion, rule));
            list.Sort((a, b) => b.Since.CompareTo(a.Since));
        }
        return this;
    }

    /// <summary>Marks an op as non-differentiable (its outputs never carry gradients).</summary>
    public GradientRuleRegistry RegisterNonDifferentiable(string opType)
    {
        lock (_nonDifferentiable) _nonDifferentiable.Add(opType);
        return this;
    }

    /// <summary>True when the op's outputs never carry gradients.</summary>
    public bool IsNonDifferentiable(string domain, string opType) =>
        NormalizeDomain(domain) == "" && _nonDifferentiable.Contains(opType);

    /// <summary>The rule for an op at an opset, or null.</summary>
    public IGradientRule? Find(string domain, string opType, long opset)
    {
        if (!_rules.TryGetValue((NormalizeDomain(domain), opType), out var list)) return null;
        lock (list)
            foreach (var (since, rule) in list)
                if (opset >= since) return rule;
        return null;
    }

    /// <summary>True when a rule exists (at any opset) or the op is non-differentiable.</summary>
    public bool Knows(string domain, string opType) =>
        IsNonDifferentiable(domain, opType) || _rules.ContainsKey((NormalizeDomain(domain), opType));

    /// <summary>All op types with a rule.</summary>
    public IReadOnlyCollection<string> OpTypesWithRules => _rules.Keys.Select(k => k.Domain == "" ? k.OpType : $"{k.Domain}.{k.OpType}").ToArray();

    /// <summary>All non-differentiable op types.</summary>
    public IReadOnlyCollection<string> NonDifferentiableOpTypes { get { lock (_nonDifferentiable) return _nonDifferentiable.ToArray(); } }

    private static string NormalizeDomain(string domain) => domain is "ai.onnx" ? "" : domain ?? "";

    private static GradientRuleRegistry CreateDefault()
    {
        var registry = new GradientRuleRegistry();
        foreach (var type in typeof(GradientRuleRegistry).Assembly.GetTypes())
        {
            var attrs = type.GetCustomAttributes<GradientRuleAttribute>().ToArray();
            if (attrs.Length == 0) continue;
            if (!typeof(IGradientRule).IsAssignableFrom(type) || type.IsAbstract)
                throw new InvalidOperationException($"{type} has [GradientRule] but is not a concrete IGradientRule.");
            var rule = (IGradientRule)Activator.CreateInstance(type, nonPublic: true)!;
            foreach (var a in attrs) registry.Register(a.OpType, rule, a.Domain, a.SinceVersion);
        }
        return registry;
    }
}
