namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Turns text feedback into BERT inputs (<c>input_ids</c>, <c>attention_mask</c>, <c>token_type_ids</c>; int64
/// <c>[1, length]</c>) with the tokenizer the artifacts manifest records; tensor feedback passes through. Used
/// automatically for models whose manifest carries <c>onnxtune.tokenizer.*</c> settings.
/// </summary>
/// <remarks>
/// The round engine stacks only records of equal shape, so sequences are padded (<c>[PAD]</c>, mask 0) up to a
/// multiple of <see cref="LengthBucket"/> tokens: records of similar length then share a batch, and the padding
/// costs at most <see cref="LengthBucket"/> - 1 positions per record. Masked positions change neither attention nor
/// the masked mean pooling, so the loss equals that of the unpadded sequence.
/// </remarks>
internal sealed class BertFeedbackEncoder(TextModelContext text) : IFeedbackEncoder
{
    /// <summary>Sequence lengths are rounded up to a multiple of this.</summary>
    public const int LengthBucket = 16;

    public TextModelContext Text => text;

    public IReadOnlyDictionary<string, TensorData> Encode(FeedbackRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        if (record.Tensors is { } tensors) return tensors;
        if (record.Text is not { } s)
            throw new OnnxTuneException($"Model '{text.ModelName}': feedback record {record.Id} has neither text nor tensors.");
        return text.Encode(s, LengthBucket);
    }
}
