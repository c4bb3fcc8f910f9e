using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;

namespace OnnxTune.Text.Tests;

/// <summary>Extracts the real all-MiniLM-L6-v2 once per test run into the test output folder (kept between runs).</summary>
public sealed class MiniLmFixture
{
    public MiniLmFixture()
    {
        CacheDirectory = Path.Combine(AppContext.BaseDirectory, "minilm-cache");
        Files = MiniLmModel.Extract(CacheDirectory);
        Encoder = BertTextEncoder.FromVocabulary(Files.VocabularyPath);
    }

    public string CacheDirectory { get; }

    public MiniLmFiles Files { get; }

    public BertTextEncoder Encoder { get; }

    public BertTextEncoder CreateEncoder(int maxLength, BertPadding padding = BertPadding.Longest) =>
        BertTextEncoder.FromVocabulary(Files.VocabularyPath, new BertTextEncoderOptions { MaxLength = maxLength, Padding = padding });
}

[CollectionDefinition(Name)]
public sealed class MiniLmCollection : ICollectionFixture<MiniLmFixture>
{
    public const string Name = "MiniLM";
}
