namespace OnnxTune.Hosting;

/// <summary>Element types accepted in feedback and predictions.</summary>
public enum TensorDataType
{
    /// <summary>32-bit float.</summary>
    Float,

    /// <summary>64-bit integer (token ids, masks).</summary>
    Int64,
}

/// <summary>A dense tensor: a feedback example or a prediction input (with the model input's full shape), or a prediction output.</summary>
public sealed class TensorData
{
    private TensorData(TensorDataType type, long[] shape, float[]? floats, long[]? longs)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"Tensor shape [{string.Join(",", shape)}] has a negative dim.", nameof(shape));
            n = checked(n * d);
        }
        var length = floats?.Length ?? longs!.Length;
        if (n != length)
            throw new ArgumentException($"{length} values do not fill shape [{string.Join(",", shape)}] ({n}).", nameof(shape));
        ElementType = type;
        Shape = shape;
        FloatData = floats;
        Int64Data = longs;
    }

    /// <summary>Gets the element type.</summary>
    public TensorDataType ElementType { get; }

    /// <summary>Gets the dims.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>Gets the values when <see cref="ElementType"/> is <see cref="TensorDataType.Float"/>.</summary>
    public float[]? FloatData { get; }

    /// <summary>Gets the values when <see cref="ElementType"/> is <see cref="TensorDataType.Int64"/>.</summary>
    public long[]? Int64Data { get; }

    /// <summary>Number of elements.</summary>
    public int Length => FloatData?.Length ?? Int64Data!.Length;

    /// <summary>Creates a float tensor (the array is kept, not copied).</summary>
    public static TensorData Float(float[] data, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        return new(TensorDataType.Float, shape ?? [data.Length], data, null);
    }

    /// <summary>Creates an int64 tensor (the array is kept, not copied).</summary>
    public static TensorData Int64(long[] data, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        return new(TensorDataType.Int64, shape ?? [data.Length], null, data);
    }
}

/// <summary>The correct output for a feedback record: a label name or a class index.</summary>
public readonly record struct FeedbackLabel
{
    /// <summary>Creates a label by name (must be one of the configured labels).</summary>
    public FeedbackLabel(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        Name = name;
    }

    /// <summary>Creates a label by class index.</summary>
    public FeedbackLabel(long index) => Index = index;

    /// <summary>Gets the label name, when given by name.</summary>
    public string? Name { get; }

    /// <summary>Gets the class index, when given by index.</summary>
    public long? Index { get; }

    /// <summary>Creates a label by name.</summary>
    public static implicit operator FeedbackLabel(string name) => new(name);

    /// <summary>Creates a label by class index.</summary>
    public static implicit operator FeedbackLabel(long index) => new(index);

    /// <summary>Creates a label by class index.</summary>
    public static implicit operator FeedbackLabel(int index) => new(index);

    /// <summary>Creates a label by name.</summary>
    public static FeedbackLabel FromName(string name) => new(name);

    /// <summary>Creates a label by class index.</summary>
    public static FeedbackLabel FromIndex(long index) => new(index);

    /// <inheritdoc/>
    public override string ToString() => Name ?? Index?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "";
}

/// <summary>One correction from the app: an input (text or tensors) and the output it should have produced.</summary>
public sealed record Feedback
{
    /// <summary>Gets the text input (text models), or <see langword="null"/>.</summary>
    public string? Text { get; init; }

    /// <summary>Gets the tensor inputs by graph input name, or <see langword="null"/>.</summary>
    public IReadOnlyDictionary<string, TensorData>? Tensors { get; init; }

    /// <summary>Gets the correct label.</summary>
    public required FeedbackLabel Label { get; init; }

    /// <summary>Gets the example weight.</summary>
    /// <value>The default value is 1.</value>
    public float Weight { get; init; } = 1f;

    /// <summary>Gets the user the record belongs to (for deletion on request).</summary>
    public string? UserId { get; init; }

    /// <summary>
    /// Gets the partition the record belongs to (a tenant or user id, at most 256 characters, no control characters).
    /// With personalization on, the partition's records also train its own adapter. Set it from the authenticated
    /// caller, never from request content.
    /// </summary>
    /// <value>The default value is <see langword="null"/>: the record trains only the shared model.</value>
    public string? PartitionKey { get; init; }

    /// <summary>Gets free-form metadata stored with the record.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    /// <summary>Gets the prediction this feedback answers (which version served it, what it predicted), or <see langword="null"/>.</summary>
    /// <value>The default value is <see langword="null"/>: the feedback is not tied to a served prediction.</value>
    public PredictionReference? Prediction { get; init; }

    /// <summary>Feedback for a text model.</summary>
    public static Feedback ForText(string text, FeedbackLabel label, string? userId = null) =>
        new() { Text = text, Label = label, UserId = userId };

    /// <summary>Feedback for a tensor model.</summary>
    public static Feedback ForTensors(IReadOnlyDictionary<string, TensorData> tensors, FeedbackLabel label, string? userId = null) =>
        new() { Tensors = tensors, Label = label, UserId = userId };
}

/// <summary>Returned once a feedback record is durably stored.</summary>
/// <param name="Id">The record id.</param>
/// <param name="Sequence">Store sequence number (monotonic).</param>
/// <param name="HeldOut">True when the record is held out for validation rather than trained on. Keep it from untrusted
/// clients: the side is keyed by a secret of the store so that nobody can choose it, but a client that sees it can
/// resend variants of an input until one lands where it wants.</param>
public sealed record FeedbackReceipt(string Id, long Sequence, bool HeldOut);

/// <summary>A stored feedback record.</summary>
public sealed record FeedbackRecord
{
    /// <summary>Gets the record id (its hash decides held-out membership).</summary>
    public required string Id { get; init; }

    /// <summary>Gets the store sequence number (0 before the record is stored).</summary>
    public long Sequence { get; init; }

    /// <summary>Gets when the record was accepted.</summary>
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>Gets the text input, or <see langword="null"/>.</summary>
    public string? Text { get; init; }

    /// <summary>Gets the tensor inputs, or <see langword="null"/>.</summary>
    public IReadOnlyDictionary<string, TensorData>? Tensors { get; init; }

    /// <summary>Gets the resolved class index.</summary>
    public long LabelIndex { get; init; }

    /// <summary>Gets the label name when known.</summary>
    public string? LabelName { get; init; }

    /// <summary>Gets the example weight.</summary>
    public float Weight { get; init; } = 1f;

    /// <summary>Gets the owning user id, or <see langword="null"/>.</summary>
    public string? UserId { get; init; }

    /// <summary>Gets the partition (tenant or user) the record belongs to, or <see langword="null"/>.</summary>
    public string? PartitionKey { get; init; }

    /// <summary>Gets free-form metadata.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    /// <summary>Gets whether the record is held out for validation.</summary>
    public bool HeldOut { get; init; }
}

/// <summary>What was wrong with a feedback record.</summary>
public enum FeedbackErrorKind
{
    /// <summary>Neither text nor tensors, or both.</summary>
    MissingInput,
    /// <summary>A tensor name the model does not have.</summary>
    UnknownInput,
    /// <summary>A tensor with the wrong element type.</summary>
    TypeMismatch,
    /// <summary>A tensor with the wrong rank or a wrong fixed dim.</summary>
    ShapeMismatch,
    /// <summary>A NaN or infinite value (tensor or weight).</summary>
    NonFiniteValue,
    /// <summary>Text longer than the configured limit.</summary>
    TextTooLong,
    /// <summary>Empty or whitespace-only text.</summary>
    EmptyText,
    /// <summary>A label name or index the model does not know.</summary>
    UnknownLabel,
    /// <summary>A negative weight.</summary>
    InvalidWeight,
    /// <summary>Text for a model that takes tensors (no tokenizer in its artifacts).</summary>
    TextNotSupported,
    /// <summary>A tensor with more elements than <c>MaxFeedbackTensorElements</c>, or a sequence longer than the tokenizer's max length.</summary>
    TooLarge,
    /// <summary>A float beyond <c>MaxFeedbackValue</c> in magnitude, or a token id / mask value outside its range.</summary>
    ValueOutOfRange,
    /// <summary>An empty partition key, one longer than 256 characters, or one with control characters.</summary>
    InvalidPartitionKey,
}

/// <summary>A feedback record was rejected on write; nothing was stored.</summary>
public sealed class FeedbackValidationException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public FeedbackValidationException(FeedbackErrorKind kind, string field, string message) : base(message)
    {
        Kind = kind;
        Field = field;
    }

    /// <summary>Gets what was wrong.</summary>
    public FeedbackErrorKind Kind { get; }

    /// <summary>Gets the field at fault (<c>Text</c>, <c>Label</c>, <c>Weight</c> or <c>Tensors[name]</c>).</summary>
    public string Field { get; }
}

/// <summary>Records corrections from the app; each call returns only after the record is durably stored.</summary>
public interface IFeedbackWriter
{
    /// <summary>Validates and stores one record.</summary>
    /// <exception cref="FeedbackValidationException">The record is invalid; nothing was stored.</exception>
    ValueTask<FeedbackReceipt> WriteAsync(Feedback feedback, CancellationToken cancellationToken = default);
}

/// <summary>Durable feedback storage. The default is <see cref="SqliteFeedbackStore"/>.</summary>
public interface IFeedbackStore
{
    /// <summary>Stores a record durably and returns its sequence number.</summary>
    ValueTask<long> AppendAsync(FeedbackRecord record, CancellationToken cancellationToken = default);

    /// <summary>Highest sequence number ever assigned (0 when empty).</summary>
    ValueTask<long> GetLatestSequenceAsync(CancellationToken cancellationToken = default);

    /// <summary>Counts training (not held-out) records with <paramref name="afterSequence"/> &lt; sequence.</summary>
    ValueTask<long> CountTrainingSinceAsync(long afterSequence, CancellationToken cancellationToken = default);

    /// <summary>Training records with <paramref name="afterSequence"/> &lt; sequence ≤ <paramref name="upToSequence"/>, in order.</summary>
    ValueTask<IReadOnlyList<FeedbackRecord>> GetTrainingSinceAsync(long afterSequence, long upToSequence, CancellationToken cancellationToken = default);

    /// <summary>A deterministic (by <paramref name="seed"/>) sample of up to <paramref name="count"/> training records with sequence ≤ <paramref name="upToSequence"/>.</summary>
    ValueTask<IReadOnlyList<FeedbackRecord>> GetReplaySampleAsync(long upToSequence, int count, int seed, CancellationToken cancellationToken = default);

    /// <summary>Held-out records with sequence ≤ <paramref name="upToSequence"/>, in order.</summary>
    ValueTask<IReadOnlyList<FeedbackRecord>> GetHeldOutAsync(long upToSequence, CancellationToken cancellationToken = default);

    /// <summary>Deletes every record of a user; returns how many were deleted.</summary>
    ValueTask<int> DeleteUserAsync(string userId, CancellationToken cancellationToken = default);

    /// <summary>Deletes records accepted before <paramref name="cutoff"/>; returns how many were deleted.</summary>
    ValueTask<int> DeleteOlderThanAsync(DateTimeOffset cutoff, CancellationToken cancellationToken = default);

    /// <summary>Reads a small durable state value (for example the training watermark).</summary>
    ValueTask<string?> GetStateAsync(string key, CancellationToken cancellationToken = default);

    /// <summary>Writes a small durable state value.</summary>
    ValueTask SetStateAsync(string key, string value, CancellationToken cancellationToken = default);
}
