using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxTune.Hosting.Training;

/// <summary>
/// The serving model's class scores on a round's replayed records: the teacher of the distillation term, so that a
/// round learning new classes keeps the old decisions (Learning without Forgetting). Records of one shape run as one
/// batch; every example gets scores (zero factor unless replayed) so that batches stack.
/// </summary>
internal static class TeacherScores
{
    private const int BatchRows = 64;

    public static void Fill(List<TrainingEngineFineTuningRound.Example> examples, string servingModelPath, string scoresOutput, int threads, double factor, CancellationToken ct)
    {
        using var options = new SessionOptions { IntraOpNumThreads = Math.Max(1, threads), InterOpNumThreads = 1 };
        using var session = new InferenceSession(servingModelPath, options);
        var output = session.OutputNames.Contains(scoresOutput) ? scoresOutput : session.OutputNames[0];
        using var run = new RunOptions();
        foreach (var group in examples.Where(e => e.Replayed).GroupBy(e => e.Signature, StringComparer.Ordinal))
            foreach (var chunk in group.Chunk(BatchRows))
            {
                ct.ThrowIfCancellationRequested();
                var names = new List<string>();
                var values = new List<OrtValue>();
                try
                {
                    foreach (var (name, first) in chunk[0].Tensors)
                    {
                        var shape = first.Shape.ToArray();
                        shape[0] = chunk.Length;
                        names.Add(name);
                        values.Add(first.FloatData is not null
                            ? OrtValue.CreateTensorValueFromMemory(chunk.SelectMany(e => e.Tensors[name].FloatData!).ToArray(), shape)
                            : OrtValue.CreateTensorValueFromMemory(chunk.SelectMany(e => e.Tensors[name].Int64Data!).ToArray(), shape));
                    }
                    using var outputs = session.Run(run, names, values, [output]);
                    var info = outputs[0].GetTensorTypeAndShape();
                    if (info.ElementDataType != TensorElementType.Float || info.Shape.Length != 2 || info.Shape[0] != chunk.Length)
                        throw new OnnxTuneException($"The serving model's output '{output}' is {info.ElementDataType} [{string.Join(",", info.Shape)}]; distillation needs float [batch, classes] scores.");
                    var scores = outputs[0].GetTensorDataAsSpan<float>();
                    var classes = (int)info.Shape[1];
                    for (var i = 0; i < chunk.Length; i++)
                    {
                        chunk[i].Teacher = scores.Slice(i * classes, classes).ToArray();
                        chunk[i].DistillationFactor = (float)factor;
                    }
                }
                finally
                {
                    foreach (var v in values) v.Dispose();
                }
            }
        // Examples that are not distilled still need scores of the same width to stack with distilled ones.
        var width = examples.FirstOrDefault(e => e.Teacher is not null)?.Teacher!.Length ?? 0;
        foreach (var e in examples)
            e.Teacher ??= new float[width];
    }
}
