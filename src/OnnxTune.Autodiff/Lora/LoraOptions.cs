namespace OnnxTune.Autodiff.Lora;

/// <summary>
/// LoRA adapters (PEFT conventions) on MatMul/Gemm weights: for each target weight <c>W</c>, trainable
/// <c>W.lora_A</c> <c>[r, in]</c> (Kaiming-uniform, a = √5, i.e. U(−1/√in, 1/√in), seeded) and <c>W.lora_B</c>
/// <c>[out, r]</c> (zeros); the node's output gains <c>(alpha / r) · (dropout(x) · Aᵀ) · Bᵀ</c>. <c>W</c> stays frozen.
/// </summary>
public sealed record LoraOptions
{
    /// <summary>Default rank.</summary>
    public const int DefaultRank = 8;

    /// <summary>Globs (<c>*</c>, <c>?</c>) of the weights to adapt; each must match at least one MatMul/Gemm weight.</summary>
    public IReadOnlyList<string> Targets { get; init; } = [];

    /// <summary>Exact weight names resolved elsewhere (e.g. through an encoder layer map), adapted as well.</summary>
    public IReadOnlyList<string> TargetNames { get; init; } = [];

    /// <summary>Rank <c>r</c> (default 8).</summary>
    public int Rank { get; init; } = DefaultRank;

    /// <summary>Scaling numerator <c>alpha</c> (null: 2·<see cref="Rank"/>); the branch is scaled by alpha / r.</summary>
    public double? Alpha { get; init; }

    /// <summary>Dropout probability on the adapter input, training graph only (default 0: no Dropout node).</summary>
    public double Dropout { get; init; }

    /// <summary>Seed of the deterministic <c>lora_A</c> initialisation (default 0).</summary>
    public int Seed { get; init; }

    /// <summary>alpha / r.</summary>
    public double Scale => (Alpha ?? 2.0 * Rank) / Rank;

    /// <summary>Checks the values; the message names the wrong setting.</summary>
    /// <exception cref="LoraException">No target, rank below 1, alpha not finite and positive, dropout outside [0, 1).</exception>
    public void Validate()
    {
        if (Targets is null || TargetNames is null || (Targets.Count == 0 && TargetNames.Count == 0))
            throw new LoraException("LoraOptions.Targets (--lora) names no weight: give at least one glob of a MatMul/Gemm weight.");
        if (Rank < 1)
            throw new LoraException($"LoraOptions.Rank (--lora-rank) must be at least 1 (got {Rank}).");
        if (Alpha is { } a && !(double.IsFinite(a) && a > 0))
            throw new LoraException($"LoraOptions.Alpha (--lora-alpha) must be finite and > 0 (got {a}).");
        if (!(Dropout >= 0 && Dropout < 1))
            throw new LoraException($"LoraOptions.Dropout (--lora-dropout) must be in [0, 1) (got {Dropout}).");
    }
}

/// <summary>A LoRA setting or target is wrong: a glob that matches nothing, a tensor that is not a MatMul/Gemm weight, a bad rank...</summary>
public sealed class LoraException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public LoraException(string message) : base(message) { }
}
