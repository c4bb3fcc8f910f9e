using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.Tokenization;

namespace OnnxTune.Text.Tests.Heads;

internal static class HeadRunner
{
    /// <summary>Runs a model in a plain InferenceSession on a text batch; returns the first output's data and shape.</summary>
    public static (float[] Data, long[] Shape) Run(ModelProto model, TextBatch batch)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model), options);
        using var ids = OrtValue.CreateTensorValueFromMemory(batch.InputIds, batch.Shape);
        using var mask = OrtValue.CreateTensorValueFromMemory(batch.AttentionMask, batch.Shape);
        using var types = OrtValue.CreateTensorValueFromMemory(batch.TokenTypeIds, batch.Shape);
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions,
            [BertInputNames.InputIds, BertInputNames.AttentionMask, BertInputNames.TokenTypeIds],
            [ids, mask, types], [session.OutputNames[0]]);
        return (outputs[0].GetTensorDataAsSpan<float>().ToArray(), outputs[0].GetTensorTypeAndShape().Shape);
    }
}
