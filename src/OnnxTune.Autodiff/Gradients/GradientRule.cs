namespace OnnxTune.Autodiff.Gradients;

/// <summary>
/// The gradient rule of one ONNX op: given the gradients flowing into the node's outputs, emits ONNX nodes that
/// compute the gradients of its inputs. Rules build graph nodes; they compute nothing themselves.
/// </summary>
public interface IGradientRule
{
    /// <summary>
    /// True when the op broadcasts its inputs (Add, Mul, ...): the walker then sums each returned input gradient
    /// back to that input's shape, so the rule itself can return gradients of the output's shape.
    /// </summary>
    bool Broadcasts { get; }

    /// <summary>Emits the backward nodes; returns one entry per node input, null where there is no gradient.</summary>
    IReadOnlyList<string?> Build(GradientContext ctx);
}

/// <summary>Base class for rules of ops without implicit broadcasting.</summary>
public abstract class GradientRule : IGradientRule
{
    /// <inheritdoc />
    public virtual bool Broadcasts => false;

    /// <inheritdoc />
    public abstract IReadOnlyList<string?> Build(GradientContext ctx);
}

/// <summary>Base class for rules of broadcasting ops (input gradients are reduced to input shapes by the walker).</summary>
public abstract class BroadcastingGradientRule : GradientRule
{
    /// <inheritdoc />
    public sealed override bool Broadcasts => true;
}

/// <summary>Registers the decorated rule class for an op type (default ONNX domain unless <see cref="Domain"/> is set).</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = false)]
public sealed class GradientRuleAttribute(string opType) : Attribute
{
    /// <summary>The op type, e.g. <c>MatMul</c>.</summary>
    public string OpType { get; } = opType;

    /// <summary>The op's domain; empty for the default ONNX domain.</summary>
    public string Domain { get; init; } = "";

    /// <summary>First opset version the rule applies to.</summary>
    public int SinceVersion { get; init; } = 1;
}

/// <summary>A tensor path needs a gradient through an op that has no gradient rule.</summary>
public sealed class GradientNotDefinedException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public GradientNotDefinedException(string opType, string nodeName, string message) : base(message)
    {
        OpType = opType;
        NodeName = nodeName;
    }

    /// <summary>The op type without a rule.</summary>
    public string OpType { get; }

    /// <summary>The node where the gradient was needed.</summary>
    public string NodeName { get; }
}
