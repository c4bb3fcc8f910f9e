using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Hosting.Internal;

/// <summary>Predicted classes of one model on a list of records.</summary>
/// <param name="Predicted">The argmax class per record, in record order.</param>
/// <param name="OutputsFinite">False when any output value was NaN or infinite.</param>
internal sealed record ModelPredictions(int[] Predicted, bool OutputsFinite);

/// <summary>Scores models for the gate.</summary>
internal interface IModelEvaluator
{
    /// <summary>Runs the model on every record and returns the argmax class of each.</summary>
    ModelPredictions Predict(string modelPath, IReadOnlyList<FeedbackRecord> records, CancellationToken cancellationToken);

    bool WeightsFinite(string modelPath);
}

/// <summary>
/// Argmax over the last dim of the scored output. Records whose encoded inputs have equal shapes (text records of
/// equal token length, tensor records of equal shape) are stacked along the leading dim into one run of up to
/// <see cref="MaxBatch"/> records. Runs on CPU with the training thread budget so that gating does not compete with serving.
/// </summary>
internal sealed class AccuracyEvaluator(IFeedbackEncoder encoder, string? scoredOutput, int threads) : IModelEvaluator
{
    internal const int MaxBatch = 64;

    /// <summary>Runs performed by this evaluator (for tests of batching).</summary>
    internal long Runs => Interlocked.Read(ref _runs);

    private long _runs;

    public ModelPredictions Predict(string modelPath, IReadOnlyList<FeedbackRecord> records, CancellationToken cancellationToken)
    {
        var predicted = new int[records.Count];
        if (records.Count == 0) return new ModelPredictions(predicted, true);
        using var so = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1 };
        using var session = new InferenceSession(modelPath, so);
        var output = scoredOutput is not null && session.OutputNames.Contains(scoredOutput) ? scoredOutput : session.OutputNames[0];
        var finite = true;
        var encoded = new IReadOnlyDictionary<string, TensorData>[records.Count];
        for (var i = 0; i < records.Count; i++) encoded[i] = encoder.Encode(records[i]);
        using var ro = new RunOptions();
        foreach (var group in Enumerable.Range(0, records.Count).GroupBy(i => Signature(encoded[i]), StringComparer.Ordinal))
        {
            foreach (var chunk in group.Chunk(group.Key.Length == 0 ? 1 : MaxBatch))
            {
                cancellationToken.ThrowIfCancellationRequested();
                RunBatch(session, ro, output, encoded, chunk, predicted, ref finite);
            }
        }
        return new ModelPredictions(predicted, finite);
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

    /// <summary>Names, types and shapes of a record's inputs; empty when the record cannot be stacked (leading dim not 1).</summary>
    private static string Signature(IReadOnlyDictionary<string, TensorData> inputs)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var (name, t) in inputs.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (t.Shape.Count == 0 || t.Shape[0] != 1) return "";
            sb.Append(name).Append(':').Append((int)t.ElementType).Append('[').AppendJoin(',', t.Shape).Append(']').Append(';');
        }
        return sb.ToString();
    }

    private void RunBatch(InferenceSession session, RunOptions ro, string output, IReadOnlyDictionary<string, TensorData>[] encoded, int[] rows, int[] predicted, ref bool finite)
    {
        var first = encoded[rows[0]];
        var names = new List<string>(first.Count);
        var values = new List<OrtValue>(first.Count);
        try
        {
            foreach (var (name, t) in first)
            {
                var shape = t.Shape.ToArray();
                if (shape.Length > 0) shape[0] = rows.Length * t.Shape[0];
                if (t.FloatData is not null)
                {
                    var data = new float[t.Length * rows.Length];
                    for (var k = 0; k < rows.Length; k++) encoded[rows[k]][name].FloatData!.CopyTo(data, k * t.Length);
                    values.Add(OrtValue.CreateTensorValueFromMemory(data, shape));
                }
                else
                {
                    var data = new long[t.Length * rows.Length];
                    for (var k = 0; k < rows.Length; k++) encoded[rows[k]][name].Int64Data!.CopyTo(data, k * t.Length);
                    values.Add(OrtValue.CreateTensorValueFromMemory(data, shape));
                }
                names.Add(name);
            }
            Interlocked.Increment(ref _runs);
            using var outs = session.Run(ro, names, values, [output]);
            var info = outs[0].GetTensorTypeAndShape();
            if (info.ElementDataType != TensorElementType.Float)
                throw new OnnxTuneException($"Output '{output}' is {info.ElementDataType}; accuracy needs float scores.");
            var scores = outs[0].GetTensorDataAsSpan<float>();
            var classes = info.Shape.Length > 0 ? (int)info.Shape[^1] : scores.Length;
            if (classes <= 0 || scores.Length != classes * rows.Length)
                throw new OnnxTuneException($"Output '{output}' has shape [{string.Join(",", info.Shape)}] for {rows.Length} records; expected one row of class scores per record.");
            for (var k = 0; k < rows.Length; k++)
            {
                var row = scores.Slice(k * classes, classes);
                var best = 0;
                for (var i = 0; i < row.Length; i++)
                {
                    if (!float.IsFinite(row[i])) finite = false;
                    if (row[i] > row[best]) best = i;
                }
                predicted[rows[k]] = best;
            }
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }
}
