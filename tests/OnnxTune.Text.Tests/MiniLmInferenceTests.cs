using Xunit.Abstractions;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;

namespace OnnxTune.Text.Tests;

[Collection(MiniLmCollection.Name)]
public sealed class MiniLmInferenceTests(MiniLmFixture fixture, ITestOutputHelper output)
{
    [Fact]
    public void Mean_pooled_embeddings_put_paraphrases_closer_than_unrelated_text()
    {
        string[] texts = ["how do I reset my password", "I forgot my password", "what's the weather tomorrow"];
        var batch = fixture.Encoder.EncodeBatch(texts);
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(fixture.Files.ModelPath, options);

        var hidden = Run(session, batch);
        Assert.Equal(batch.BatchSize * batch.SequenceLength * MiniLmModel.HiddenSize, hidden.Length);
        var embeddings = Enumerable.Range(0, batch.BatchSize).Select(r => MeanPool(hidden, batch, r)).ToArray();

        var paraphrase = Cosine(embeddings[0], embeddings[1]);
        var unrelated = Cosine(embeddings[0], embeddings[2]);
        output.WriteLine($"cos(reset, forgot)={paraphrase:F4} cos(reset, weather)={unrelated:F4}");
        Assert.True(paraphrase > unrelated + 0.2, $"cos(reset, forgot)={paraphrase:F3}, cos(reset, weather)={unrelated:F3}");

        // Padding must not change a sentence's embedding: encode it alone and compare.
        var alone = fixture.Encoder.EncodeBatch([texts[2]]);
        var aloneEmbedding = MeanPool(Run(session, alone), alone, 0);
        Assert.True(Cosine(aloneEmbedding, embeddings[2]) > 0.9999, "padding changed the pooled embedding");
    }

    private static float[] Run(InferenceSession session, TextBatch batch)
    {
        using var ids = OrtValue.CreateTensorValueFromMemory(batch.InputIds, batch.Shape);
        using var mask = OrtValue.CreateTensorValueFromMemory(batch.AttentionMask, batch.Shape);
        using var types = OrtValue.CreateTensorValueFromMemory(batch.TokenTypeIds, batch.Shape);
        using var runOptions = new RunOptions();
        using var outputs = session.Run(
            runOptions,
            [BertInputNames.InputIds, BertInputNames.AttentionMask, BertInputNames.TokenTypeIds],
            [ids, mask, types],
            [session.OutputNames[0]]);
        var shape = outputs[0].GetTensorTypeAndShape().Shape;
        Assert.Equal([batch.BatchSize, batch.SequenceLength, (long)MiniLmModel.HiddenSize], shape);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static double[] MeanPool(float[] hidden, TextBatch batch, int row)
    {
        var sum = new double[MiniLmModel.HiddenSize];
        double count = 0;
        for (var t = 0; t < batch.SequenceLength; t++)
        {
            if (batch.AttentionMask[(row * batch.SequenceLength) + t] == 0)
                continue;
            count++;
            var offset = ((row * batch.SequenceLength) + t) * MiniLmModel.HiddenSize;
            for (var h = 0; h < sum.Length; h++)
                sum[h] += hidden[offset + h];
        }
        return sum.Select(v => v / count).ToArray();
    }

    private static double Cosine(double[] a, double[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (var i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb);
    }
}
