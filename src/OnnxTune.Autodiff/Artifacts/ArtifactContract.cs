namespace OnnxTune.Autodiff.Artifacts;

/// <summary>
/// The names of the artifacts contract (src/README.md), shared by the builder that writes artifacts and the
/// runtime that runs them: graph inputs and outputs, tensor name suffixes, and the metadata that marks what the
/// builder emitted.
/// </summary>
public static class ArtifactContract
{
    /// <summary>Training-graph input (bool, <c>[]</c>) that resets accumulated gradients on the next train step.</summary>
    public const string LazyResetGradInput = "lazy_reset_grad";

    /// <summary>Suffix of the accumulation buffer input of a parameter's gradient.</summary>
    public const string AccumulationBufferSuffix = ".grad.accumulation.buffer";

    /// <summary>Suffix of the accumulated gradient output of a parameter.</summary>
    public const string AccumulationOutputSuffix = ".grad.accumulation.out";

    /// <summary>Suffix of the training-graph output with the updated value of a non-trainable state tensor (BN running statistics).</summary>
    public const string StateOutputSuffix = ".running.out";

    /// <summary>Optimizer-graph input: the learning rate (float, <c>[]</c>).</summary>
    public const string LearningRateInput = "learning_rate";

    /// <summary>Optimizer-graph input: the 1-based update count (int64, <c>[]</c>).</summary>
    public const string StepInput = "step";

    /// <summary>Suffix of an optimizer-graph input holding a parameter's gradient.</summary>
    public const string GradientSuffix = ".grad";

    /// <summary>Suffix of an optimizer-graph output (updated parameter or state).</summary>
    public const string OptimizerOutputSuffix = ".out";

    /// <summary>
    /// Training-graph metadata key whose value <see cref="AccumulationTailFormat"/> says the builder wrote each
    /// accumulated gradient as <c>Where(lazy_reset_grad, g, Add(buffer, g))</c>; the runtime derives its
    /// fresh-gradient variant only from graphs that say so.
    /// </summary>
    public const string AccumulationTailKey = "onnxtune.accumulation_tail";

    /// <summary>The value of <see cref="AccumulationTailKey"/> for the form above.</summary>
    public const string AccumulationTailFormat = "where-add/1";
}
