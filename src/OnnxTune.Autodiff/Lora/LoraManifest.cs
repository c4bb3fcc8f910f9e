namespace OnnxTune.Autodiff.Lora;

/// <summary>The LoRA adapters of an artifacts folder (<c>manifest.json</c> → <c>lora</c>): what export needs to fold or split them.</summary>
public sealed record LoraManifest
{
    /// <summary>Rank r.</summary>
    public int Rank { get; init; }

    /// <summary>alpha.</summary>
    public double Alpha { get; init; }

    /// <summary>alpha / r, the factor of the adapter branch.</summary>
    public double Scale { get; init; }

    /// <summary>Dropout on the adapter input in the training graph.</summary>
    public double Dropout { get; init; }

    /// <summary>Seed of the <c>lora_A</c> initialisation.</summary>
    public int Seed { get; init; }

    /// <summary>One entry per adapted weight, in graph order.</summary>
    public IReadOnlyList<LoraWeight> Weights { get; init; } = [];

    /// <summary>Every adapter tensor name (<c>lora_A</c> and <c>lora_B</c> of each weight).</summary>
    public IEnumerable<string> TensorNames => Weights.SelectMany(w => new[] { w.A, w.B });
}

/// <summary>One adapted base weight.</summary>
public sealed record LoraWeight
{
    /// <summary>The frozen base weight.</summary>
    public string Weight { get; init; } = "";

    /// <summary><c>&lt;Weight&gt;.lora_A</c>, shape <c>[r, in]</c>.</summary>
    public string A { get; init; } = "";

    /// <summary><c>&lt;Weight&gt;.lora_B</c>, shape <c>[out, r]</c>.</summary>
    public string B { get; init; } = "";

    /// <summary>Input features.</summary>
    public long In { get; init; }

    /// <summary>Output features.</summary>
    public long Out { get; init; }

    /// <summary>True when <see cref="Weight"/> is stored <c>[out, in]</c> (Gemm with transB = 1), false for <c>[in, out]</c> (MatMul, Gemm transB = 0).</summary>
    public bool OutIn { get; init; }

    /// <summary>Factor of <c>B·A</c> when folded into <see cref="Weight"/>: scale / Gemm alpha (scale for MatMul).</summary>
    public double MergeFactor { get; init; }

    /// <summary>The adapter branch next to each node that reads the weight.</summary>
    public IReadOnlyList<LoraBranch> Branches { get; init; } = [];
}

/// <summary>The adapter branch added for one MatMul/Gemm node.</summary>
public sealed record LoraBranch
{
    /// <summary>The node's original output (now the sum of the base product and the branch).</summary>
    public string Output { get; init; } = "";

    /// <summary>What the base node writes instead.</summary>
    public string BaseOutput { get; init; } = "";

    /// <summary>Names of the nodes the branch added.</summary>
    public IReadOnlyList<string> Nodes { get; init; } = [];
}
