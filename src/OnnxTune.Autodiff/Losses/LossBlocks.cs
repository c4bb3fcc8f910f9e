using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Losses;

/// <summary>
/// Appends a scalar loss to a model graph, in standard ONNX ops with PyTorch's definitions (mean reduction):
/// cross-entropy (class scores on the last dim, int64 labels, optional ignore index), MSE, BCE-with-logits
/// (the numerically stable softplus form) and L1.
/// </summary>
public static class LossBlocks
{
    /// <summary>
    /// Adds the label input (unless the loss is <see cref="LossKind.None"/>) and the loss nodes; returns the name
    /// of the scalar loss tensor (<see cref="LossSpec.LossOutputName"/>).
    /// </summary>
    public static string Append(GraphEditor editor, LossSpec spec, ValueInfoProto output)
    {
        ArgumentNullException.ThrowIfNull(editor);
        ArgumentNullException.ThrowIfNull(spec);
        var y = output.Name;
        var elem = ValueInfos.ElemType(output);
        var dims = output.Type?.TensorType?.Shape?.Dim.ToArray();
        var lossName = editor.Reserve(spec.LossOutputName);
        if (spec.Kind == LossKind.None)
        {
            if (dims is { Length: > 0 } && !dims.All(d => d.DimValue == 1))
                throw new OnnxTuneException($"Loss 'none' needs the output '{y}' to be a scalar loss, but its shape has rank {dims.Length}.");
            editor.AddNode("ReduceSum", [y], [lossName], Attr.Int("keepdims", 0));
            return lossName;
        }
        var label = spec.LabelName ?? "labels";
        if (editor.IsUsed(label))
            throw new OnnxTuneException($"The label input name '{label}' is already used in the model; pick another with --label.");
        editor.Reserve(label);
        switch (spec.Kind)
        {
            case LossKind.CrossEntropy:
                {
                    var labelDims = dims?[..^1].Select(DimObject).ToArray();
                    editor.AddInput(ValueInfos.Tensor(label, DataType.Int64, labelDims));
                    var scores = y;
                    if (dims is { Length: > 2 } d)
                    {
                        // [N, d1.., C] -> [N, C, d1..] as SoftmaxCrossEntropyLoss expects.
                        var perm = new List<long> { 0, d.Length - 1 };
                        for (var i = 1; i < d.Length - 1; i++) perm.Add(i);
                        scores = editor.Add("Transpose", [y], y + "_class_first", Attr.Ints("perm", [.. perm]));
                    }
                    else if (dims is null)
                        throw new OnnxTuneException($"Cross-entropy needs the rank of output '{y}' (its shape is not declared in the model).");
                    var logProb = editor.UniqueName(y + "_log_prob");
                    var attrs = new List<AttributeProto> { Attr.String("reduction", "mean") };
                    if (spec.IgnoreIndex is { } ii) attrs.Add(Attr.Int("ignore_index", ii));
                    editor.AddNode("SoftmaxCrossEntropyLoss", [scores, label], [lossName, logProb], [.. attrs]);
                    return lossName;
                }
            case LossKind.Mse or LossKind.L1 or LossKind.BceWithLogits:
                {
                    editor.AddInput(ValueInfos.Tensor(label, elem, dims?.Select(DimObject).ToArray()));
                    string perElement;
                    if (spec.Kind == LossKind.BceWithLogits)
                    {
                        // softplus(x) - x*t == max(x,0) - x*t + log(1 + exp(-|x|))
                        var sp = editor.Add("Softplus", [y], y + "_softplus");
                        perElement = editor.Add("Sub", [sp, editor.Add("Mul", [y, label], y + "_x_t")], y + "_bce");
                    }
                    else
                    {
                        var diff = editor.Add("Sub", [y, label], y + "_diff");
                        perElement = spec.Kind == LossKind.Mse
                            ? editor.Add("Mul", [diff, diff], y + "_sq")
                            : editor.Add("Abs", [diff], y + "_abs");
                    }
                    editor.AddNode("ReduceMean", [perElement], [lossName], Attr.Int("keepdims", 0));
                    return lossName;
                }
            default:
                throw new OnnxTuneException($"Unknown loss kind {spec.Kind}.");
        }
    }

    private static object? DimObject(TensorShapeProto.Types.Dimension d) =>
        d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => d.DimValue,
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => d.DimParam,
            _ => null,
        };
}
