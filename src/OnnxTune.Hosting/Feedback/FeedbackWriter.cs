using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Diagnostics;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Held-out membership from the record's input alone (its text, or its tensors' names, shapes and values), keyed with
/// the store's secret (HMAC-SHA256, <see cref="HeldOutSecret"/>): it never changes, the same input sent twice (a
/// retry, or a correction of a correction) always lands on the same side, so validation never scores an input the
/// candidate trained on, and without the secret nobody can choose a side (appending a space gives a fresh, unknowable
/// draw). Stored records keep the flag they were written with.
/// </summary>
internal static class HeldOutAssignment
{
    public static bool IsHeldOut(string key, ReadOnlySpan<byte> secret, double share)
    {
        if (share <= 0) return false;
        if (secret.Length == 0) throw new ArgumentException("The held-out secret is empty.", nameof(secret));
        Span<byte> hash = stackalloc byte[32];
        HMACSHA256.HashData(secret, Encoding.UTF8.GetBytes(key), hash);
        var u = BinaryPrimitives.ReadUInt64LittleEndian(hash);
        return u / 18446744073709551616.0 < share;
    }

    /// <summary>A key identifying a record's input (not its label).</summary>
    public static string InputKey(string? text, IReadOnlyDictionary<string, TensorData>? tensors)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        if (text is not null)
        {
            sha.AppendData("text\0"u8);
            sha.AppendData(Encoding.UTF8.GetBytes(text));
        }
        if (tensors is not null)
        {
            Span<byte> number = stackalloc byte[8];
            foreach (var (name, t) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                sha.AppendData("\0tensor\0"u8);
                sha.AppendData(Encoding.UTF8.GetBytes(name));
                BinaryPrimitives.WriteInt64LittleEndian(number, (long)t.ElementType);
                sha.AppendData(number);
                foreach (var d in t.Shape)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(number, d);
                    sha.AppendData(number);
                }
                if (t.FloatData is { } f) sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(f.AsSpan()));
                if (t.Int64Data is { } l) sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(l.AsSpan()));
            }
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}

/// <summary>What a valid feedback record looks like for one model: inputs from the manifest, labels from options or manifest.</summary>
internal sealed class FeedbackSchema
{
    public FeedbackSchema(ArtifactManifest manifest, OnDeviceFineTuningOptions options)
    {
        Inputs = manifest.Inputs;
        MaxTextLength = options.MaxTextLength;
        Limits = FeedbackLimits.Create(manifest, options);
        MaxWeight = options.MaxFeedbackWeight;
        if (options.Labels is { Count: > 0 } labels) Labels = [.. labels];
        else if (manifest.Properties.TryGetValue("labels", out var json))
        {
            try { Labels = JsonSerializer.Deserialize<string[]>(json); }
            catch (JsonException e) { throw new OnnxTuneException($"Manifest property 'labels' is not a JSON array of strings: {e.Message}", e); }
        }
        else if (TextModelContext.LoadLabelNames(manifest, options.ArtifactsPath) is { } names) Labels = names;
        var scored = manifest.Outputs.FirstOrDefault(o => o.Name == manifest.Loss.OutputName) ?? (manifest.Outputs.Count > 0 ? manifest.Outputs[0] : null);
        if (Labels is not null) ClassCount = Labels.Count;
        else if (scored?.FixedDims is { Length: > 0 } dims && dims[^1] > 0)
            ClassCount = dims[^1];
        _labelIndex = Labels?.Select((l, i) => (l, i)).ToDictionary(p => p.l, p => (long)p.i, StringComparer.Ordinal);
    }

    private readonly Dictionary<string, long>? _labelIndex;

    public IReadOnlyList<TensorSpec> Inputs { get; }
    public IReadOnlyList<string>? Labels { get; }
    public long? ClassCount { get; }
    public int MaxTextLength { get; }
    public FeedbackLimits Limits { get; }
    public float MaxWeight { get; }

    public (long Index, string? Name) ResolveLabel(FeedbackLabel label)
    {
        if (label.Name is { } name)
        {
            if (_labelIndex is null)
                throw new FeedbackValidationException(FeedbackErrorKind.UnknownLabel, "Label",
                    $"Label '{name}' was given by name, but the model has no label list (set OnDeviceFineTuning Labels or the manifest property 'labels').");
            if (!_labelIndex.TryGetValue(name, out var i))
                throw new FeedbackValidationException(FeedbackErrorKind.UnknownLabel, "Label", $"Label '{name}' is not one of the model's {_labelIndex.Count} labels.");
            return (i, name);
        }
        var index = label.Index ?? throw new FeedbackValidationException(FeedbackErrorKind.UnknownLabel, "Label", "The label is empty.");
        if (index < 0 || (ClassCount is { } n && index >= n))
            throw new FeedbackValidationException(FeedbackErrorKind.UnknownLabel, "Label",
                $"Label index {index} is out of range{(ClassCount is { } c ? $" [0, {c})" : " (must be >= 0)")}.");
        return (index, Labels?[(int)index]);
    }

    public void ValidateInput(string? text, IReadOnlyDictionary<string, TensorData>? tensors)
    {
        if ((text is null) == (tensors is null))
            throw new FeedbackValidationException(FeedbackErrorKind.MissingInput, "Text",
                "Feedback needs exactly one input: Text or Tensors.");
        if (text is not null)
        {
            if (string.IsNullOrWhiteSpace(text))
                throw new FeedbackValidationException(FeedbackErrorKind.EmptyText, "Text", "Feedback text is empty.");
            if (text.Length > MaxTextLength)
                throw new FeedbackValidationException(FeedbackErrorKind.TextTooLong, "Text",
                    $"Feedback text has {text.Length} characters; the limit (MaxTextLength) is {MaxTextLength}.");
            Limits.CheckTextAllowed();
            return;
        }
        foreach (var name in tensors!.Keys)
            if (!Inputs.Any(i => i.Name == name))
                throw new FeedbackValidationException(FeedbackErrorKind.UnknownInput, $"Tensors[{name}]",
                    $"Tensor '{name}' is not an input of the model (inputs: {string.Join(", ", Inputs.Select(i => i.Name))}).");
        foreach (var spec in Inputs)
        {
            var field = $"Tensors[{spec.Name}]";
            if (!tensors.TryGetValue(spec.Name, out var t))
                throw new FeedbackValidationException(FeedbackErrorKind.MissingInput, field, $"Model input '{spec.Name}' is missing from the feedback tensors.");
            var expected = ParseType(spec.ElementType);
            if (expected is null)
                throw new FeedbackValidationException(FeedbackErrorKind.TypeMismatch, field,
                    $"Model input '{spec.Name}' is {spec.ElementType}; feedback tensors can only fill float and int64 inputs.");
            if (expected != t.ElementType)
                throw new FeedbackValidationException(FeedbackErrorKind.TypeMismatch, field,
                    $"Tensor '{spec.Name}' is {t.ElementType}; the model input is {spec.ElementType}.");
            var dims = spec.FixedDims;
            var ok = dims.Length == t.Shape.Count;
            for (var i = 0; ok && i < dims.Length; i++)
                ok = dims[i] < 0 ? t.Shape[i] > 0 : dims[i] == t.Shape[i];
            if (!ok)
                throw new FeedbackValidationException(FeedbackErrorKind.ShapeMismatch, field,
                    $"Tensor '{spec.Name}' has shape [{string.Join(",", t.Shape)}]; the model input is [{string.Join(",", spec.Shape)}].");
            if (t.FloatData is { } f)
                for (var i = 0; i < f.Length; i++)
                    if (!float.IsFinite(f[i]))
                        throw new FeedbackValidationException(FeedbackErrorKind.NonFiniteValue, field,
                            $"Tensor '{spec.Name}' has a non-finite value ({f[i]}) at flat index {i}.");
            Limits.CheckTensor(spec, t, field);
        }
    }

    public FeedbackRecord ToRecord(Feedback feedback, string id, DateTimeOffset now, double heldOutShare, byte[]? heldOutSecret = null)
    {
        ValidateInput(feedback.Text, feedback.Tensors);
        var (index, name) = ResolveLabel(feedback.Label);
        if (!float.IsFinite(feedback.Weight))
            throw new FeedbackValidationException(FeedbackErrorKind.NonFiniteValue, "Weight", $"Weight {feedback.Weight} is not finite.");
        if (feedback.Weight < 0)
            throw new FeedbackValidationException(FeedbackErrorKind.InvalidWeight, "Weight", $"Weight {feedback.Weight} is negative.");
        if (feedback.Weight > MaxWeight)
            throw new FeedbackValidationException(FeedbackErrorKind.InvalidWeight, "Weight", $"Weight {feedback.Weight} is above the limit (MaxFeedbackWeight) {MaxWeight}.");
        ValidatePartitionKey(feedback.PartitionKey);
        return new FeedbackRecord
        {
            Id = id,
            CreatedAt = now,
            Text = feedback.Text,
            Tensors = feedback.Tensors,
            LabelIndex = index,
            LabelName = name,
            Weight = feedback.Weight,
            UserId = feedback.UserId,
            PartitionKey = feedback.PartitionKey,
            Metadata = feedback.Metadata,
            HeldOut = heldOutShare > 0 && HeldOutAssignment.IsHeldOut(HeldOutAssignment.InputKey(feedback.Text, feedback.Tensors),
                heldOutSecret ?? throw new InvalidOperationException("Held-out assignment needs the store's secret."), heldOutShare),
        };
    }

    /// <summary>The longest partition key accepted.</summary>
    internal const int MaxPartitionKeyLength = 256;

    internal static void ValidatePartitionKey(string? key)
    {
        if (key is null) return;
        if (key.Length == 0 || key.Length > MaxPartitionKeyLength)
            throw new FeedbackValidationException(FeedbackErrorKind.InvalidPartitionKey, "PartitionKey",
                $"PartitionKey has {key.Length} characters; it must have 1 to {MaxPartitionKeyLength}.");
        foreach (var c in key)
            if (char.IsControl(c))
                throw new FeedbackValidationException(FeedbackErrorKind.InvalidPartitionKey, "PartitionKey",
                    $"PartitionKey contains the control character U+{(int)c:X4}.");
    }

    internal static TensorDataType? ParseType(string elementType) => elementType.ToUpperInvariant() switch
    {
        "FLOAT" or "FLOAT32" or "TENSOR(FLOAT)" => TensorDataType.Float,
        "INT64" or "TENSOR(INT64)" => TensorDataType.Int64,
        _ => null,
    };
}

/// <summary>Validates feedback against the model's schema and appends it to the store.</summary>
internal sealed class FeedbackWriter(
    string modelName,
    FeedbackSchema schema,
    IFeedbackStore store,
    double heldOutShare,
    TimeProvider timeProvider,
    OnnxTuneMetrics metrics,
    ILogger logger,
    ModelHealth? health = null) : IFeedbackWriter
{
    private readonly HeldOutSecret _secret = new(store);

    /// <summary>Called after a record was stored (the drift watch counts corrections of served predictions).</summary>
    internal Action<Feedback, FeedbackRecord>? Accepted { get; set; }

    public async ValueTask<FeedbackReceipt> WriteAsync(Feedback feedback, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(feedback);
        FeedbackRecord record;
        var secret = heldOutShare > 0 ? await _secret.GetAsync(cancellationToken).ConfigureAwait(false) : null;
        try
        {
            record = schema.ToRecord(feedback, Guid.NewGuid().ToString("N"), timeProvider.GetUtcNow(), heldOutShare, secret);
        }
        catch (FeedbackValidationException e)
        {
            metrics.FeedbackRejected(modelName, e.Kind);
            Log.FeedbackRejected(logger, modelName, e.Kind, e.Field, e.Message);
            throw;
        }
        long seq;
        try
        {
            seq = await store.AppendAsync(record, cancellationToken).ConfigureAwait(false);
        }
        catch (FeedbackStoreException e)
        {
            health?.OnStoreFailure(e);
            throw;
        }
        catch (Exception e) when (FeedbackStoreErrors.IsStoreError(e))
        {
            // A custom store's raw SQLite or file failure is typed here too; the health check reports the store as unwritable.
            var typed = FeedbackStoreErrors.Wrap(e, store.GetType().Name, "append");
            health?.OnStoreFailure(typed);
            throw typed;
        }
        health?.OnStoreOk();
        metrics.FeedbackAccepted(modelName, record.HeldOut);
        Accepted?.Invoke(feedback, record);
        return new FeedbackReceipt(record.Id, seq, record.HeldOut);
    }
}
