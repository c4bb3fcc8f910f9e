using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace OnnxTune.Text.Tokenization;

/// <summary>How a batch is padded.</summary>
public enum BertPadding
{
    /// <summary>Pad every row to the longest row of the batch.</summary>
    Longest,

    /// <summary>Pad every row to <see cref="BertTextEncoderOptions.MaxLength"/> (fixed shapes).</summary>
    MaxLength,
}

/// <summary>Settings of <see cref="BertTextEncoder"/>. Defaults match all-MiniLM-L6-v2 fine-tuning.</summary>
public sealed class BertTextEncoderOptions
{
    /// <summary>Gets or sets the longest sequence, <c>[CLS]</c> and <c>[SEP]</c> included; longer texts lose tokens at the end.</summary>
    /// <value>The default value is 128.</value>
    public int MaxLength { get; set; } = 128;

    /// <summary>Gets or sets whether text is lower-cased and stripped of accents first (uncased BERT vocabularies).</summary>
    /// <value>The default value is <see langword="true"/>.</value>
    public bool LowerCase { get; set; } = true;

    /// <summary>Gets or sets how batches are padded.</summary>
    /// <value>The default value is <see cref="BertPadding.Longest"/>.</value>
    public BertPadding Padding { get; set; } = BertPadding.Longest;
}

/// <summary>Graph input names BERT-style encoders use.</summary>
public static class BertInputNames
{
    /// <summary>Token ids, int64 <c>[batch, sequence]</c>.</summary>
    public const string InputIds = "input_ids";

    /// <summary>1 for real tokens, 0 for padding, int64 <c>[batch, sequence]</c>.</summary>
    public const string AttentionMask = "attention_mask";

    /// <summary>Segment ids (all 0 for single sentences), int64 <c>[batch, sequence]</c>.</summary>
    public const string TokenTypeIds = "token_type_ids";
}

/// <summary>
/// Turns text into BERT encoder inputs with Microsoft.ML.Tokenizers' <see cref="BertTokenizer"/>:
/// <c>[CLS] tokens… [SEP]</c>, truncated to <see cref="BertTextEncoderOptions.MaxLength"/>, then padded into
/// <see cref="TextBatch"/>es of flat int64 arrays.
/// </summary>
public sealed partial class BertTextEncoder
{
    private readonly BertTokenizer _tokenizer;

    private BertTextEncoder(BertTokenizer tokenizer, BertTextEncoderOptions options)
    {
        _tokenizer = tokenizer;
        MaxLength = options.MaxLength;
        Padding = options.Padding;
    }

    /// <summary>Creates an encoder from a WordPiece <c>vocab.txt</c> (one token per line, line number = id).</summary>
    /// <exception cref="TokenizerVocabularyException">The file is missing or is not a usable BERT vocabulary.</exception>
    public static BertTextEncoder FromVocabulary(string vocabularyPath, BertTextEncoderOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(vocabularyPath);
        options ??= new BertTextEncoderOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxLength, 2, nameof(options.MaxLength));
        if (!File.Exists(vocabularyPath))
            throw new TokenizerVocabularyException(vocabularyPath, "the file does not exist");
        BertTokenizer tokenizer;
        try
        {
            // The library's own pre-tokenizer (\w+ or \p{P}) deletes symbols such as $ + = < > | ~ ^ ` and emoji
            // (dotnet/machinelearning#7725). Hugging Face's BasicTokenizer, which all-MiniLM-L6-v2 was trained with,
            // splits every ASCII non-alphanumeric and every Unicode punctuation character into its own token and keeps
            // other characters inside words. A first tokenizer supplies the special tokens the replacement must keep.
            var probe = BertTokenizer.Create(vocabularyPath, CreateOptions(options.LowerCase, preTokenizer: null));
            var special = probe.SpecialTokens!.ToDictionary(
                kv => options.LowerCase ? kv.Key.ToLowerInvariant() : kv.Key, kv => kv.Value, StringComparer.Ordinal);
            tokenizer = BertTokenizer.Create(vocabularyPath, CreateOptions(options.LowerCase, new RegexPreTokenizer(WordOrPunctuation(), special)));
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or FormatException or KeyNotFoundException)
        {
            throw new TokenizerVocabularyException(vocabularyPath, e.Message, e);
        }
        return new BertTextEncoder(tokenizer, options);
    }

    private static BertOptions CreateOptions(bool lowerCase, PreTokenizer? preTokenizer) => new()
    {
        LowerCaseBeforeTokenization = lowerCase,
        // Hugging Face BertTokenizer strips accents whenever it lower-cases (strip_accents=None).
        RemoveNonSpacingMarks = lowerCase,
        ApplyBasicTokenization = true,
        SplitOnSpecialTokens = true,
        IndividuallyTokenizeCjk = true,
        PreTokenizer = preTokenizer,
    };

    /// <summary>One punctuation character (BERT's definition: ASCII non-alphanumerics plus Unicode P*), or a run of anything else but whitespace.</summary>
    [GeneratedRegex(@"[\p{P}\x21-\x2F\x3A-\x40\x5B-\x60\x7B-\x7E]|[^\s\p{P}\x21-\x2F\x3A-\x40\x5B-\x60\x7B-\x7E]+", RegexOptions.CultureInvariant)]
    private static partial Regex WordOrPunctuation();

    /// <summary>The underlying tokenizer.</summary>
    public BertTokenizer Tokenizer => _tokenizer;

    /// <summary>Longest encoded sequence, special tokens included.</summary>
    public int MaxLength { get; }

    /// <summary>Padding used by <see cref="EncodeBatch"/> and <see cref="EncodedTexts"/>.</summary>
    public BertPadding Padding { get; }

    /// <summary>Id of <c>[CLS]</c>.</summary>
    public int ClassificationTokenId => _tokenizer.ClassificationTokenId;

    /// <summary>Id of <c>[SEP]</c>.</summary>
    public int SeparatorTokenId => _tokenizer.SeparatorTokenId;

    /// <summary>Id of <c>[PAD]</c>.</summary>
    public int PaddingTokenId => _tokenizer.PaddingTokenId;

    /// <summary>Encodes one text as <c>[CLS] tokens… [SEP]</c>, dropping tokens from the end beyond <see cref="MaxLength"/>.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        // BertNormalizer deletes \t \n \r as control characters, gluing the words around them together
        // (dotnet/machinelearning#7724); BERT treats them as spaces.
        if (text.AsSpan().IndexOfAny('\t', '\n', '\r') >= 0)
            text = text.Replace('\t', ' ').Replace('\n', ' ').Replace('\r', ' ');
        var body = _tokenizer.EncodeToIds(text, addSpecialTokens: false);
        var kept = Math.Min(body.Count, MaxLength - 2);
        var ids = new int[kept + 2];
        ids[0] = ClassificationTokenId;
        for (var i = 0; i < kept; i++)
            ids[i + 1] = body[i];
        ids[kept + 1] = SeparatorTokenId;
        return ids;
    }

    /// <summary>Decodes ids back to text; special tokens are dropped unless <paramref name="keepSpecialTokens"/>.</summary>
    public string Decode(IEnumerable<int> ids, bool keepSpecialTokens = false) =>
        _tokenizer.Decode(ids, skipSpecialTokens: !keepSpecialTokens);

    /// <summary>Encodes and pads a batch of texts in the given order.</summary>
    /// <param name="texts">The texts; row <c>i</c> of the batch is <c>texts[i]</c>.</param>
    /// <param name="labels">Optional class indices, one per text (see <see cref="Labels.LabelMap"/>).</param>
    public TextBatch EncodeBatch(IReadOnlyList<string> texts, IReadOnlyList<int>? labels = null)
    {
        ArgumentNullException.ThrowIfNull(texts);
        return EncodeAll(texts, labels).GetBatch(Enumerable.Range(0, texts.Count).ToArray());
    }

    /// <summary>Tokenizes a whole data set once so it can be batched many times (see <see cref="EncodedTexts.Batches"/>).</summary>
    /// <param name="texts">The texts.</param>
    /// <param name="labels">Optional class indices, one per text.</param>
    public EncodedTexts EncodeAll(IReadOnlyList<string> texts, IReadOnlyList<int>? labels = null)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (labels is not null && labels.Count != texts.Count)
            throw new ArgumentException($"{labels.Count} labels were given for {texts.Count} texts; they must pair up one to one.", nameof(labels));
        var encoded = new int[texts.Count][];
        for (var i = 0; i < texts.Count; i++)
            encoded[i] = Encode(texts[i] ?? throw new ArgumentException($"Text {i} is null.", nameof(texts)));
        return new EncodedTexts(encoded, labels?.ToArray(), Padding == BertPadding.MaxLength ? MaxLength : null, PaddingTokenId);
    }
}

/// <summary>The vocabulary file given to <see cref="BertTextEncoder"/> cannot be used.</summary>
public sealed class TokenizerVocabularyException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public TokenizerVocabularyException(string path, string problem, Exception? inner = null)
        : base($"BERT vocabulary '{path}' cannot be used: {problem}.", inner)
    {
        VocabularyPath = path;
    }

    /// <summary>The vocabulary file.</summary>
    public string VocabularyPath { get; }
}
