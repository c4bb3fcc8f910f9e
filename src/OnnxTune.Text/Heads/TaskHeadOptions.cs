namespace OnnxTune.Text.Heads;

/// <summary>What a task head predicts.</summary>
public enum TaskHeadKind
{
    /// <summary>One class per sequence: pooling, dropout, Linear(hidden, classes); cross-entropy.</summary>
    SequenceClassification,

    /// <summary>One class per token: dropout, Linear(hidden, classes) on every position; cross-entropy with ignore index.</summary>
    TokenClassification,

    /// <summary>One or more real values per sequence: pooling, dropout, Linear(hidden, outputs); mean squared error.</summary>
    Regression,
}

/// <summary>How token states become one vector per sequence.</summary>
public enum HeadPooling
{
    /// <summary>Mean over real tokens: <c>sum(h * mask) / max(sum(mask), 1e-9)</c> (sentence-transformers' mean pooling).</summary>
    Mean,

    /// <summary>The first token's state (<c>[CLS]</c>).</summary>
    First,
}

/// <summary>Settings of <see cref="TaskHeadBuilder"/>.</summary>
public sealed record TaskHeadOptions
{
    /// <summary>Default dropout probability before the head's linear layer (Hugging Face's <c>hidden_dropout_prob</c>).</summary>
    public const float DefaultDropout = 0.1f;

    /// <summary>Gets the head kind.</summary>
    /// <value>The default value is <see cref="TaskHeadKind.SequenceClassification"/>.</value>
    public TaskHeadKind Kind { get; init; } = TaskHeadKind.SequenceClassification;

    /// <summary>Gets the number of classes (classification) or of predicted values (regression).</summary>
    /// <value>The default value is 2.</value>
    public int Outputs { get; init; } = 2;

    /// <summary>Gets the pooling of sequence-level heads (ignored by token classification).</summary>
    /// <value>The default value is <see cref="HeadPooling.Mean"/>.</value>
    public HeadPooling Pooling { get; init; } = HeadPooling.Mean;

    /// <summary>Gets the dropout probability (0 leaves the Dropout node out).</summary>
    /// <value>The default value is 0.1.</value>
    public float Dropout { get; init; } = DefaultDropout;

    /// <summary>Gets the seed of the new weights' initialisation.</summary>
    /// <value>The default value is 0.</value>
    public int Seed { get; init; }

    /// <summary>Gets the encoder output holding token states <c>[batch, sequence, hidden]</c> (null: the first rank-3 output).</summary>
    public string? EncoderOutput { get; init; }

    /// <summary>Gets the attention mask input used by mean pooling.</summary>
    /// <value>The default value is <c>attention_mask</c>.</value>
    public string AttentionMaskInput { get; init; } = Tokenization.BertInputNames.AttentionMask;

    /// <summary>Gets the hidden size when the encoder output does not declare it (null: read it from the model).</summary>
    public int? HiddenSize { get; init; }

    /// <summary>Gets the head output's name (null: <c>logits</c> for classification, <c>predictions</c> for regression).</summary>
    public string? OutputName { get; init; }
}
