using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Hosting.Internal;

/// <summary>Computes a model's gate metrics.</summary>
internal interface IModelEvaluator
{
    EvaluationResult Evaluate(string modelPath, IReadOnlyList<FeedbackRecord> heldOut, IReadOnlyList<FeedbackRecord> golden, CancellationToken cancellationToken);

    bool WeightsFinite(string modelPath);
}

/// <summary>
/// Classification accuracy: one record at a time (records may differ in sequence length), argmax over the last
/// dim of the scored output, weighted by record weight. Runs on CPU with the training thread budget so that
/// gating does not compete with serving.
/// </summary>
internal sealed class AccuracyEvaluator(IFeedbackEncoder encoder, string? scoredOutput, int threads) : IModelEvaluator
{
    public EvaluationResult Evaluate(string modelPath, IReadOnlyList<FeedbackRecord> heldOut, IReadOnlyList<FeedbackRecord> golden, CancellationToken cancellationToken)
    {
        using var so = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1 };
        using var session = new InferenceSession(modelPath, so);
        var output = scoredOutput is not null && session.OutputNames.Contains(scoredOutput) ? scoredOutput : session.OutputNames[0];
        var finite = true;
        var (h, hn) = Score(session, output, heldOut, ref finite, cancellationToken);
        var (g, gn) = Score(session, output, golden, ref finite, cancellationToken);
        return new EvaluationResult(h, hn, g, gn, finite);
    }

    public bool WeightsFinite(string modelPath)
    {
        var model = OnnxModelReader.Load(modelPath);
        foreach (var t in model.Graph.Initializer)
        {
            var type = (TensorProto.Types.DataType)t.DataType;
            if (type is not (TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Double)) continue;
            foreach (var v in TensorProtos.ToDoubleArray(t))
                if (!double.IsFinite(v)) return false;
        }
        return true;
    }

    private (double? Metric, int Count) Score(InferenceSession session, string output, IReadOnlyList<FeedbackRecord> records, ref bool finite, CancellationToken ct)
    {
        if (records.Count == 0) return (null, 0);
        double correct = 0, total = 0;
        using var ro = new RunOptions();
        foreach (var r in records)
        {
            ct.ThrowIfCancellationRequested();
            var inputs = encoder.Encode(r);
            var names = new List<string>(inputs.Count);
            var values = new List<OrtValue>(inputs.Count);
            try
            {
                foreach (var (name, t) in inputs)
                {
                    names.Add(name);
                    values.Add(t.FloatData is { } f ? OrtValue.CreateTensorValueFromMemory(f, t.Shape.ToArray()) : OrtValue.CreateTensorValueFromMemory(t.Int64Data!, t.Shape.ToArray()));
                }
                using var outs = session.Run(ro, names, values, [output]);
                var info = outs[0].GetTensorTypeAndShape();
                if (info.ElementDataType != TensorElementType.Float)
                    throw new OnnxTuneException($"Output '{output}' is {info.ElementDataType}; accuracy needs float scores.");
                var scores = outs[0].GetTensorDataAsSpan<float>();
                var best = 0;
                for (var i = 0; i < scores.Length; i++)
                {
                    if (!float.IsFinite(scores[i])) finite = false;
                    if (scores[i] > scores[best]) best = i;
                }
                var classes = info.Shape.Length > 0 ? info.Shape[^1] : scores.Length;
                if (scores.Length != classes)
                    throw new OnnxTuneException($"Output '{output}' has shape [{string.Join(",", info.Shape)}] for one record; expected one row of class scores.");
                total += r.Weight;
                if (best == r.LabelIndex) correct += r.Weight;
            }
            finally
            {
                foreach (var v in values) v.Dispose();
            }
        }
        return (total > 0 ? correct / total : null, records.Count);
    }
}
