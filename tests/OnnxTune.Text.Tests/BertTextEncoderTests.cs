using OnnxTune.Text.Tokenization;

namespace OnnxTune.Text.Tests;

[Collection(MiniLmCollection.Name)]
public sealed class BertTextEncoderTests(MiniLmFixture fixture)
{
    [Fact]
    public void Special_token_ids_follow_bert_conventions()
    {
        var e = fixture.Encoder;
        Assert.Equal(101, e.ClassificationTokenId);
        Assert.Equal(102, e.SeparatorTokenId);
        Assert.Equal(0, e.PaddingTokenId);
    }

    [Fact]
    public void Encodes_lower_cased_wordpieces_between_cls_and_sep()
    {
        var e = fixture.Encoder;
        // bert-base-uncased ids: hello=7592, world=2088, ","=1010, "!"=999.
        Assert.Equal([101, 7592, 1010, 2088, 999, 102], e.Encode("Hello, WORLD!"));
        Assert.Equal([101, 102], e.Encode(""));
        // Accents are stripped like Hugging Face's uncased BertTokenizer.
        Assert.Equal(e.Encode("cafe"), e.Encode("Café"));
        // Words outside the vocabulary split into ## pieces, not [UNK].
        var pieces = e.Encode("unaffable");
        Assert.True(pieces.Length > 3);
        Assert.DoesNotContain(100, pieces);
        var vocab = File.ReadAllLines(fixture.Files.VocabularyPath);
        Assert.False(vocab[pieces[1]].StartsWith("##", StringComparison.Ordinal));
        Assert.All(pieces[2..^1], id => Assert.StartsWith("##", vocab[id], StringComparison.Ordinal));
    }

    [Fact]
    public void Symbols_and_line_breaks_tokenize_like_hugging_face_bert()
    {
        var e = fixture.Encoder;
        var vocab = File.ReadAllLines(fixture.Files.VocabularyPath);
        int Id(string token) => Array.IndexOf(vocab, token);
        // Microsoft.ML.Tokenizers' default pre-tokenizer would drop "$", "+", "=" (dotnet/machinelearning#7725).
        Assert.Equal([101, Id("transfer"), Id("$"), Id("50"), 102], e.Encode("Transfer $50"));
        Assert.Equal([101, Id("1"), Id("+"), Id("1"), Id("="), Id("2"), 102], e.Encode("1+1=2"));
        Assert.Equal([101, Id("snake"), Id("_"), Id("case"), 102], e.Encode("snake_case"));
        Assert.Equal([101, 100, 102], e.Encode("\U0001F600"));
        // ... and would glue words across \n or \t (dotnet/machinelearning#7724).
        Assert.Equal(e.Encode("note book one line"), e.Encode("note\tbook\r\none\nline"));
        // Special tokens written in the text stay single tokens, in either case.
        Assert.Equal([101, Id("hi"), 102, Id("there"), 102], e.Encode("hi [SEP] there"));
        Assert.Equal([101, Id("hi"), 102, Id("there"), 102], e.Encode("hi [sep] there"));
    }

    [Theory]
    [InlineData("how do i reset my password")]
    [InlineData("what's the weather tomorrow")]
    [InlineData("transfer $50 from checking to savings, ok?")]
    public void Decode_round_trips_lower_case_text(string text)
    {
        var e = fixture.Encoder;
        var ids = e.Encode(text.ToUpperInvariant());
        Assert.Equal(text.Replace(" ", "", StringComparison.Ordinal), e.Decode(ids).Replace(" ", "", StringComparison.Ordinal));
        Assert.StartsWith("[CLS]", e.Decode(ids, keepSpecialTokens: true), StringComparison.Ordinal);
    }

    [Fact]
    public void Truncation_keeps_cls_and_sep_and_the_first_tokens()
    {
        var e = fixture.CreateEncoder(maxLength: 8);
        var full = fixture.Encoder.Encode("one two three four five six seven eight nine ten");
        var cut = e.Encode("one two three four five six seven eight nine ten");
        Assert.Equal(12, full.Length);
        Assert.Equal(8, cut.Length);
        Assert.Equal(101, cut[0]);
        Assert.Equal(102, cut[^1]);
        Assert.Equal(full[..7], cut[..7]);
        // Exactly at the limit nothing is lost.
        Assert.Equal(fixture.Encoder.Encode("one two three four five six"), e.Encode("one two three four five six"));
        Assert.Throws<ArgumentOutOfRangeException>(() => fixture.CreateEncoder(maxLength: 1));
    }

    [Fact]
    public void Batch_pads_to_longest_with_mask_and_zero_token_types()
    {
        var e = fixture.Encoder;
        string[] texts = ["hi", "how do i reset my password", "what's the weather"];
        var batch = e.EncodeBatch(texts, labels: [2, 0, 1]);
        var rows = texts.Select(e.Encode).ToArray();
        var width = rows.Max(r => r.Length);
        Assert.Equal([3L, width], batch.Shape);
        Assert.Equal([3L], batch.LabelShape);
        Assert.Equal(3 * width, batch.InputIds.Length);
        Assert.Equal(3 * width, batch.AttentionMask.Length);
        Assert.Equal(3 * width, batch.TokenTypeIds.Length);
        Assert.All(batch.TokenTypeIds, t => Assert.Equal(0L, t));
        Assert.Equal([2L, 0L, 1L], batch.Labels!);
        Assert.Equal([0, 1, 2], batch.ExampleIndices);
        for (var r = 0; r < 3; r++)
        {
            Assert.Equal(rows[r].Length, batch.RowLength(r));
            for (var t = 0; t < width; t++)
            {
                var real = t < rows[r].Length;
                Assert.Equal(real ? rows[r][t] : 0L, batch.InputIds[(r * width) + t]);
                Assert.Equal(real ? 1L : 0L, batch.AttentionMask[(r * width) + t]);
            }
        }
    }

    [Fact]
    public void Fixed_padding_uses_max_length_for_every_batch()
    {
        var e = fixture.CreateEncoder(maxLength: 16, BertPadding.MaxLength);
        var batch = e.EncodeBatch(["hi", "hello there"]);
        Assert.Equal([2L, 16L], batch.Shape);
        Assert.Null(batch.Labels);
        Assert.Equal(3, batch.RowLength(0));
        Assert.Equal(4, batch.RowLength(1));
        Assert.Equal(0L, batch.InputIds[15]);
        Assert.Equal(0L, batch.AttentionMask[16 + 4]);
    }

    [Fact]
    public void Label_count_must_match_text_count()
    {
        var ex = Assert.Throws<ArgumentException>(() => fixture.Encoder.EncodeAll(["a", "b"], [0]));
        Assert.Contains("1 labels", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_vocabulary_is_a_typed_error()
    {
        var path = Path.Combine(Path.GetTempPath(), "onnxtune-text-tests", "missing-vocab.txt");
        var ex = Assert.Throws<TokenizerVocabularyException>(() => BertTextEncoder.FromVocabulary(path));
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Vocabulary_without_special_tokens_is_a_typed_error()
    {
        var dir = Path.Combine(Path.GetTempPath(), "onnxtune-text-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var path = Path.Combine(dir, "vocab.txt");
            File.WriteAllLines(path, ["[PAD]", "[UNK]", "hello", "world"]);
            var ex = Assert.Throws<TokenizerVocabularyException>(() => BertTextEncoder.FromVocabulary(path));
            Assert.Contains(path, ex.Message, StringComparison.Ordinal);
            Assert.Contains("[SEP]", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Encoded_texts_batches_are_sorted_by_length_and_cover_everything()
    {
        var e = fixture.Encoder;
        var words = "the quick brown fox jumps over a lazy dog while my password reset fails".Split(' ');
        var texts = Enumerable.Range(0, 37).Select(i => string.Join(' ', words.Take(1 + (i * 7 % words.Length)))).ToArray();
        var labels = Enumerable.Range(0, 37).Select(i => i % 5).ToArray();
        var data = e.EncodeAll(texts, labels);
        var batches = data.Batches(batchSize: 8, seed: 3).ToList();
        Assert.Equal(5, batches.Count);
        Assert.Equal(Enumerable.Range(0, 37), batches.SelectMany(b => b.ExampleIndices).Order());
        foreach (var b in batches)
        {
            Assert.Equal(b.ExampleIndices.Max(i => data.Lengths[i]), b.SequenceLength);
            for (var r = 0; r < b.BatchSize; r++)
            {
                Assert.Equal((long)labels[b.ExampleIndices[r]], b.Labels![r]);
                Assert.Equal(data.Lengths[b.ExampleIndices[r]], b.RowLength(r));
            }
        }
        // Length bucketing pads far less than random batching would on this data.
        var padded = batches.Sum(b => b.BatchSize * b.SequenceLength);
        Assert.True(padded < 37 * data.Lengths.Max(), $"{padded}");
    }
}
