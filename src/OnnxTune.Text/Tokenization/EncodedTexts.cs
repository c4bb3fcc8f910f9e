using OnnxTune.Text.Batching;

namespace OnnxTune.Text.Tokenization;

/// <summary>A tokenized data set (from <see cref="BertTextEncoder.EncodeAll"/>) that can be cut into padded batches.</summary>
public sealed class EncodedTexts
{
    private readonly int[][] _ids;
    private readonly int[]? _labels;
    private readonly int? _fixedLength;
    private readonly long _padId;

    internal EncodedTexts(int[][] ids, int[]? labels, int? fixedLength, int padId)
    {
        _ids = ids;
        _labels = labels;
        _fixedLength = fixedLength;
        _padId = padId;
        Lengths = Array.AsReadOnly(ids.Select(x => x.Length).ToArray());
    }

    /// <summary>Number of examples.</summary>
    public int Count => _ids.Length;

    /// <summary>Whether examples carry class indices.</summary>
    public bool HasLabels => _labels is not null;

    /// <summary>Token count of each example, <c>[CLS]</c> and <c>[SEP]</c> included.</summary>
    public IReadOnlyList<int> Lengths { get; }

    /// <summary>Token ids of example <paramref name="index"/> (unpadded).</summary>
    public ReadOnlySpan<int> TokenIds(int index) => _ids[index];

    /// <summary>
    /// Cuts the data set into batches of similar length (see <see cref="LengthBatching.CreateBatches"/>) and pads
    /// each. Every example appears in exactly one batch.
    /// </summary>
    /// <param name="batchSize">Rows per batch (the longest-examples batch may be smaller).</param>
    /// <param name="seed">Shuffles ties and batch order when set; <see langword="null"/> keeps shortest-first order.</param>
    public IEnumerable<TextBatch> Batches(int batchSize, int? seed = null)
    {
        foreach (var indices in LengthBatching.CreateBatches(Lengths, batchSize, seed))
            yield return GetBatch(indices);
    }

    /// <summary>Pads the given examples into one batch, in the given order.</summary>
    public TextBatch GetBatch(IReadOnlyList<int> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        if (indices.Count == 0)
            throw new ArgumentException("A batch needs at least one example.", nameof(indices));
        var longest = 0;
        foreach (var i in indices)
        {
            if ((uint)i >= (uint)_ids.Length)
                throw new ArgumentOutOfRangeException(nameof(indices), i, $"Example index {i} is outside the data set of {_ids.Length} examples.");
            longest = Math.Max(longest, _ids[i].Length);
        }
        var width = _fixedLength ?? longest;
        var rows = indices.Count;
        var inputIds = new long[rows * width];
        var mask = new long[rows * width];
        var types = new long[rows * width];
        long[]? labels = _labels is null ? null : new long[rows];
        var order = new int[rows];
        for (var r = 0; r < rows; r++)
        {
            var example = indices[r];
            var ids = _ids[example];
            var row = inputIds.AsSpan(r * width, width);
            for (var t = 0; t < ids.Length; t++)
                row[t] = ids[t];
            row[ids.Length..].Fill(_padId);
            mask.AsSpan(r * width, ids.Length).Fill(1);
            if (labels is not null)
                labels[r] = _labels![example];
            order[r] = example;
        }
        return new TextBatch(rows, width, inputIds, mask, types, labels, order);
    }
}
