using System.Globalization;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Tokenization;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// What the training engine needs of a record beyond names, types and fixed dims: one example (leading dim 1),
/// bounded size, bounded float values (a value like 3e38 trains "fine" and leaves inf in AdamW's second moment),
/// and for text models text only where a tokenizer exists and token ids / masks within range.
/// </summary>
internal sealed class FeedbackLimits
{
    private FeedbackLimits(bool isTextModel, long? vocabularySize, int? maxSequenceLength, double maxValue, int maxElements)
    {
        IsTextModel = isTextModel;
        VocabularySize = vocabularySize;
        MaxSequenceLength = maxSequenceLength;
        MaxValue = maxValue;
        MaxElements = maxElements;
    }

    /// <summary>True when the manifest records a tokenizer (text feedback can be encoded).</summary>
    public bool IsTextModel { get; }

    /// <summary>Tokens in the vocabulary file (token ids must be below it), when known.</summary>
    public long? VocabularySize { get; }

    public int? MaxSequenceLength { get; }

    public double MaxValue { get; }

    public int MaxElements { get; }

    public static FeedbackLimits Create(ArtifactManifest manifest, OnDeviceFineTuningOptions options)
    {
        var p = manifest.Properties;
        var isText = p.TryGetValue(TextModelSettings.VocabularyKey, out var vocab);
        long? size = null;
        int? maxLength = null;
        if (isText)
        {
            try
            {
                // WordPiece vocab.txt: one token per line, the id is the line number.
                size = File.ReadLines(Path.Combine(options.ArtifactsPath, vocab!)).LongCount();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
            {
                size = null; // the text services report the missing file when they load.
            }
            maxLength = p.TryGetValue(TextModelSettings.MaxLengthKey, out var ml) && int.TryParse(ml, NumberStyles.Integer, CultureInfo.InvariantCulture, out var m) && m > 0 ? m : 128;
        }
        return new FeedbackLimits(isText, size, maxLength, options.MaxFeedbackValue, options.MaxFeedbackTensorElements);
    }

    public void CheckTextAllowed()
    {
        if (!IsTextModel)
            throw new FeedbackValidationException(FeedbackErrorKind.TextNotSupported, "Text",
                "The model takes tensors (its artifacts record no tokenizer); send Tensors, not Text.");
    }

    public void CheckTensor(TensorSpec spec, TensorData t, string field)
    {
        if (t.Shape.Count == 0 || t.Shape[0] != 1)
            throw new FeedbackValidationException(FeedbackErrorKind.ShapeMismatch, field,
                $"Tensor '{spec.Name}' has shape [{string.Join(",", t.Shape)}]; a record holds one example, so its leading (batch) dim must be 1.");
        if (t.Length > MaxElements)
            throw new FeedbackValidationException(FeedbackErrorKind.TooLarge, field,
                $"Tensor '{spec.Name}' has {t.Length} elements; the limit (MaxFeedbackTensorElements) is {MaxElements}.");
        if (t.FloatData is { } f)
        {
            var limit = (float)Math.Min(MaxValue, float.MaxValue);
            for (var i = 0; i < f.Length; i++)
                if (Math.Abs(f[i]) > limit)
                    throw new FeedbackValidationException(FeedbackErrorKind.ValueOutOfRange, field,
                        string.Create(CultureInfo.InvariantCulture, $"Tensor '{spec.Name}' has {f[i]} at flat index {i}; values must be within ±{MaxValue} (MaxFeedbackValue)."));
        }
        if (!IsTextModel || t.Int64Data is not { } ids) return;
        if (MaxSequenceLength is { } max && t.Shape.Count == 2 && t.Shape[1] > max)
            throw new FeedbackValidationException(FeedbackErrorKind.TooLarge, field,
                $"Tensor '{spec.Name}' has {t.Shape[1]} positions; the tokenizer's max length is {max}.");
        var (low, high, what) = spec.Name switch
        {
            BertInputNames.InputIds => (0L, VocabularySize ?? long.MaxValue, $"a token id of the {VocabularySize}-token vocabulary"),
            BertInputNames.AttentionMask => (0L, 2L, "a mask value (0 or 1)"),
            BertInputNames.TokenTypeIds => (0L, 2L, "a token type id (0 or 1)"),
            _ => (long.MinValue, long.MaxValue, ""),
        };
        for (var i = 0; i < ids.Length; i++)
            if (ids[i] < low || ids[i] >= high)
                throw new FeedbackValidationException(FeedbackErrorKind.ValueOutOfRange, field,
                    $"Tensor '{spec.Name}' has {ids[i]} at flat index {i}; it must be {what}.");
    }
}
