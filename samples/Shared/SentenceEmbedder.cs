using Microsoft.ML.OnnxRuntime;
using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;

namespace OnnxTune.Samples;

/// <summary>
/// all-MiniLM-L6-v2 sentence embeddings as sentence-transformers computes them: the mean of
/// <c>last_hidden_state</c> over real (attention-mask 1) tokens, then L2-normalised. Thread-safe.
/// </summary>
internal sealed class SentenceEmbedder : IDisposable
{
    public const int Dimension = MiniLmModel.HiddenSize;

    private readonly InferenceSession _session;
    private readonly BertTextEncoder _encoder;
    private readonly bool _hasTokenTypes;

    public SentenceEmbedder(int threads = 0)
    {
        var files = MiniLmModel.Extract();
        using var so = new Microsoft.ML.OnnxRuntime.SessionOptions { InterOpNumThreads = 1 };
        if (threads > 0) so.IntraOpNumThreads = threads;
        _session = new InferenceSession(files.ModelPath, so);
        _encoder = BertTextEncoder.FromVocabulary(files.VocabularyPath, new BertTextEncoderOptions { MaxLength = 64 });
        _hasTokenTypes = _session.InputMetadata.ContainsKey(BertInputNames.TokenTypeIds);
        ModelPath = files.ModelPath;
    }

    public string ModelPath { get; }

    public float[] Embed(string text) => EmbedAll([text]);

    /// <summary>Embeds every text; row <c>i</c> of the result (<c>[count, 384]</c>, flat) is <c>texts[i]</c>.</summary>
    public float[] EmbedAll(IReadOnlyList<string> texts, int batchSize = 64, Action<int>? progress = null)
    {
        var result = new float[texts.Count * Dimension];
        var encoded = _encoder.EncodeAll(texts);
        var done = 0;
        // Batches of similar length keep padding (wasted compute) small.
        foreach (var batch in encoded.Batches(batchSize))
        {
            RunBatch(batch, result);
            done += batch.BatchSize;
            progress?.Invoke(done);
        }
        return result;
    }

    private void RunBatch(TextBatch batch, float[] result)
    {
        long[] shape = [batch.BatchSize, batch.SequenceLength];
        var names = new List<string> { BertInputNames.InputIds, BertInputNames.AttentionMask };
        using var ids = OrtValue.CreateTensorValueFromMemory(batch.InputIds, shape);
        using var mask = OrtValue.CreateTensorValueFromMemory(batch.AttentionMask, shape);
        using var types = OrtValue.CreateTensorValueFromMemory(batch.TokenTypeIds, shape);
        var values = new List<OrtValue> { ids, mask };
        if (_hasTokenTypes)
        {
            names.Add(BertInputNames.TokenTypeIds);
            values.Add(types);
        }
        using var ro = new RunOptions();
        using var outputs = _session.Run(ro, names, values, ["last_hidden_state"]);
        var hidden = outputs[0].GetTensorDataAsSpan<float>();
        var seq = batch.SequenceLength;
        for (var r = 0; r < batch.BatchSize; r++)
        {
            var dst = result.AsSpan(batch.ExampleIndices[r] * Dimension, Dimension);
            dst.Clear();
            var count = 0;
            for (var t = 0; t < seq; t++)
            {
                if (batch.AttentionMask[r * seq + t] == 0) continue;
                var h = hidden.Slice((r * seq + t) * Dimension, Dimension);
                for (var d = 0; d < Dimension; d++) dst[d] += h[d];
                count++;
            }
            double norm = 0;
            for (var d = 0; d < Dimension; d++)
            {
                dst[d] /= Math.Max(count, 1);
                norm += dst[d] * dst[d];
            }
            var inv = (float)(1 / Math.Max(Math.Sqrt(norm), 1e-12));
            for (var d = 0; d < Dimension; d++) dst[d] *= inv;
        }
    }

    public void Dispose() => _session.Dispose();
}
