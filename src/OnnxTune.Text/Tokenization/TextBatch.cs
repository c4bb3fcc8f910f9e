namespace OnnxTune.Text.Tokenization;

/// <summary>
/// One padded batch of BERT inputs as flat row-major int64 arrays of shape <see cref="Shape"/>
/// (<c>[BatchSize, SequenceLength]</c>), ready to wrap in ONNX Runtime tensors without copying.
/// </summary>
public sealed class TextBatch
{
    internal TextBatch(int batchSize, int sequenceLength, long[] inputIds, long[] attentionMask, long[] tokenTypeIds, long[]? labels, int[] exampleIndices)
    {
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        TokenTypeIds = tokenTypeIds;
        Labels = labels;
        ExampleIndices = exampleIndices;
    }

    /// <summary>Rows in the batch.</summary>
    public int BatchSize { get; }

    /// <summary>Columns (tokens per row after padding).</summary>
    public int SequenceLength { get; }

    /// <summary><c>[BatchSize, SequenceLength]</c>, the shape of the three input arrays.</summary>
    public long[] Shape => [BatchSize, SequenceLength];

    /// <summary><c>[BatchSize]</c>, the shape of <see cref="Labels"/>.</summary>
    public long[] LabelShape => [BatchSize];

    /// <summary>Token ids; padding positions hold the <c>[PAD]</c> id.</summary>
    public long[] InputIds { get; }

    /// <summary>1 where <see cref="InputIds"/> holds a real token, 0 on padding.</summary>
    public long[] AttentionMask { get; }

    /// <summary>Segment ids; all 0 (single-sentence inputs).</summary>
    public long[] TokenTypeIds { get; }

    /// <summary>Class index per row (int64, as cross-entropy expects), or <see langword="null"/> when unlabeled.</summary>
    public long[]? Labels { get; }

    /// <summary>Row <c>r</c> holds example <c>ExampleIndices[r]</c> of the source data set.</summary>
    public IReadOnlyList<int> ExampleIndices { get; }

    /// <summary>Number of real (unpadded) tokens in row <paramref name="row"/>.</summary>
    public int RowLength(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, BatchSize);
        var n = 0;
        foreach (var m in AttentionMask.AsSpan(row * SequenceLength, SequenceLength))
            n += (int)m;
        return n;
    }
}
