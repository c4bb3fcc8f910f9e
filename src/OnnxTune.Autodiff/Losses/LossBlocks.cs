using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
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
        if (spec.LabelSmoothing != 0)
        {
            if (spec.Kind != LossKind.CrossEntropy)
                throw new OnnxTuneException($"Label smoothing applies to the cross-entropy loss only (the loss is {spec.Kind}).");
            if (!(spec.LabelSmoothing is > 0 and <= 1))
                throw new OnnxTuneException($"LossSpec.LabelSmoothing must be in [0, 1] (got {spec.LabelSmoothing}).");
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
                    if (spec.DistillationTargetName is not null || spec.DistillationWeightName is not null)
                    {
                        if (spec.DistillationTargetName is null || spec.DistillationWeightName is null)
                            throw new OnnxTuneException("Distillation needs both LossSpec.DistillationTargetName and DistillationWeightName.");
                        if (dims!.Length != 2)
                            throw new OnnxTuneException($"Distillation needs [batch, classes] scores; output '{y}' has rank {dims.Length}.");
                        if (!(spec.DistillationTemperature > 0 && double.IsFinite(spec.DistillationTemperature)))
                            throw new OnnxTuneException($"DistillationTemperature must be a positive number (got {spec.DistillationTemperature}).");
                        var ceName = editor.UniqueName(lossName + "_cross_entropy");
                        var ce = spec.SampleWeightName is { } wn
                            ? WeightedCrossEntropy(editor, spec, scores, label, wn, elem, labelDims!, ceName, logProb)
                            : PlainCrossEntropy(editor, spec, scores, label, ceName, logProb, elem);
                        var kd = Distillation(editor, spec, y, elem, dims.Select(DimObject).ToArray());
                        editor.AddNode("Add", [ce, kd], [lossName]);
                        return lossName;
                    }
                    if (spec.SampleWeightName is { } weightName)
                        return WeightedCrossEntropy(editor, spec, scores, label, weightName, elem, labelDims!, lossName, logProb);
                    return PlainCrossEntropy(editor, spec, scores, label, lossName, logProb, elem);
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

    private static string PlainCrossEntropy(GraphEditor editor, LossSpec spec, string scores, string label, string lossName, string logProb, DataType elem)
    {
        var attrs = new List<AttributeProto> { Attr.String("reduction", "mean") };
        if (spec.IgnoreIndex is { } ii) attrs.Add(Attr.Int("ignore_index", ii));
        if (spec.LabelSmoothing == 0)
        {
            editor.AddNode("SoftmaxCrossEntropyLoss", [scores, label], [lossName, logProb], [.. attrs]);
            return lossName;
        }
        // (1 − ε)·mean(nll) + ε·mean(u) over the counted targets, u = −(1/C)·Σ_c log p_c (PyTorch's label_smoothing).
        var nll = editor.UniqueName(scores + "_nll_mean");
        editor.AddNode("SoftmaxCrossEntropyLoss", [scores, label], [nll, logProb], [.. attrs]);
        var uniform = UniformTerm(editor, scores, logProb, elem);
        string uniformMean;
        if (spec.IgnoreIndex is { } ignore)
        {
            var counted = CountedMask(editor, label, ignore, elem);
            var sum = editor.Add("ReduceSum", [editor.Add("Mul", [uniform, counted], uniform + "_counted")], uniform + "_sum", Attr.Int("keepdims", 0));
            var count = editor.Add("ReduceSum", [counted], counted + "_count", Attr.Int("keepdims", 0));
            var tiny = editor.AddInitializer(Scalar(elem, label + "_smoothing_tiny", elem == DataType.Double ? 1e-300 : 1e-30));
            uniformMean = editor.Add("Div", [sum, editor.Add("Max", [count, tiny], count + "_clamped")], uniform + "_mean");
        }
        else
            uniformMean = editor.Add("ReduceMean", [uniform], uniform + "_mean", Attr.Int("keepdims", 0));
        return Smoothed(editor, spec, nll, uniformMean, elem, lossName);
    }

    // u = −(1/C)·Σ_c log p_c per target [N, d...], from SoftmaxCrossEntropyLoss's log_prob [N, C, d...].
    private static string UniformTerm(GraphEditor editor, string scores, string logProb, DataType elem)
    {
        var total = editor.Add("ReduceSum", [logProb, editor.ConstantInt64s(logProb + "_class_axis", 1)], logProb + "_class_sum", Attr.Int("keepdims", 0));
        // Gather, not Shape's start/end (opset 15+): models exported at older opsets get the same graph.
        var classDim = editor.Add("Gather", [editor.Add("Shape", [scores], scores + "_shape_for_classes"), editor.ConstantInt64s(scores + "_class_dim", 1)],
            scores + "_classes", Attr.Int("axis", 0));
        var classes = editor.Add("Cast", [classDim], scores + "_class_count", Attr.Int("to", (long)elem));
        return editor.Add("Neg", [editor.Add("Div", [total, classes], logProb + "_class_mean")], logProb + "_uniform_nll");
    }

    private static string Smoothed(GraphEditor editor, LossSpec spec, string nll, string uniform, DataType elem, string? output)
    {
        var keep = editor.AddInitializer(Scalar(elem, nll + "_smoothing_keep", 1 - spec.LabelSmoothing));
        var eps = editor.AddInitializer(Scalar(elem, nll + "_smoothing", spec.LabelSmoothing));
        var a = editor.Add("Mul", [nll, keep], nll + "_kept");
        var b = editor.Add("Mul", [uniform, eps], uniform + "_smoothed");
        if (output is null) return editor.Add("Add", [a, b], nll + "_smoothed_loss");
        editor.AddNode("Add", [a, b], [output]);
        return output;
    }

    private static string CountedMask(GraphEditor editor, string label, long ignore, DataType elem)
    {
        var ignoreValue = editor.AddInitializer(TensorProtos.Int64(label + "_ignore_index", [ignore]));
        var counted = editor.Add("Not", [editor.Add("Equal", [label, ignoreValue], label + "_ignored")], label + "_counted");
        return editor.Add("Cast", [counted], label + "_counted_float", Attr.Int("to", (long)elem));
    }

    private static TensorProto Scalar(DataType elem, string name, double v) =>
        elem == DataType.Double ? TensorProtos.Double(name, [v]) : TensorProtos.Float(name, [(float)v]);

    // (1/N) Σᵢ aᵢ·T²·Σ_c p_t (log p_t − log p_s), with p = softmax(scores / T); the teacher side is an input (no gradient).
    private static string Distillation(GraphEditor editor, LossSpec spec, string scores, DataType elem, object?[] scoreDims)
    {
        var teacher = spec.DistillationTargetName!;
        var factor = spec.DistillationWeightName!;
        foreach (var name in new[] { teacher, factor })
        {
            if (editor.IsUsed(name)) throw new OnnxTuneException($"The distillation input name '{name}' is already used in the model; pick another.");
            editor.Reserve(name);
        }
        editor.AddInput(ValueInfos.Tensor(teacher, elem, scoreDims));
        editor.AddInput(ValueInfos.Tensor(factor, elem, [scoreDims[0]]));
        TensorProto Scalar(string n, double v) => elem == DataType.Double ? TensorProtos.Double(n, [v]) : TensorProtos.Float(n, [(float)v]);
        var t = spec.DistillationTemperature;
        var invT = editor.AddInitializer(Scalar(scores + "_kd_inv_temperature", 1 / t));
        var studentLog = editor.Add("LogSoftmax", [editor.Add("Mul", [scores, invT], scores + "_kd_scaled")], scores + "_kd_log_p", Attr.Int("axis", -1));
        var teacherLog = editor.Add("LogSoftmax", [editor.Add("Mul", [teacher, invT], teacher + "_scaled")], teacher + "_log_p", Attr.Int("axis", -1));
        var teacherP = editor.Add("Exp", [teacherLog], teacher + "_p");
        var kl = editor.Add("ReduceSum", [editor.Add("Mul", [teacherP, editor.Add("Sub", [teacherLog, studentLog], scores + "_kd_log_ratio")], scores + "_kd_terms"),
            editor.ConstantInt64s(scores + "_kd_class_axis", -1)], scores + "_kd_kl", Attr.Int("keepdims", 0));
        var weighted = editor.Add("Mul", [kl, factor], scores + "_kd_weighted");
        var mean = editor.Add("ReduceMean", [weighted], scores + "_kd_mean", Attr.Int("keepdims", 0));
        return editor.Add("Mul", [mean, editor.AddInitializer(Scalar(scores + "_kd_t_squared", t * t))], scores + "_kd_loss");
    }

    // Σ w·l / Σ w over the targets that count (ignore_index positions have l = 0 and are left out of Σ w).
    private static string WeightedCrossEntropy(GraphEditor editor, LossSpec spec, string scores, string label, string weightName, DataType elem,
        object?[] labelDims, string lossName, string logProb)
    {
        if (editor.IsUsed(weightName))
            throw new OnnxTuneException($"The sample-weight input name '{weightName}' is already used in the model; pick another.");
        editor.Reserve(weightName);
        editor.AddInput(ValueInfos.Tensor(weightName, elem, labelDims));
        var attrs = new List<AttributeProto> { Attr.String("reduction", "none") };
        if (spec.IgnoreIndex is { } ii) attrs.Add(Attr.Int("ignore_index", ii));
        var perTarget = editor.UniqueName(scores + "_per_target_loss");
        editor.AddNode("SoftmaxCrossEntropyLoss", [scores, label], [perTarget, logProb], [.. attrs]);
        if (spec.LabelSmoothing != 0)
            perTarget = Smoothed(editor, spec, perTarget, UniformTerm(editor, scores, logProb, elem), elem, null);
        var weights = weightName;
        if (spec.IgnoreIndex is { } ignore)
            weights = editor.Add("Mul", [weightName, CountedMask(editor, label, ignore, elem)], weightName + "_counted");
        var sum = editor.Add("ReduceSum", [editor.Add("Mul", [perTarget, weights], perTarget + "_weighted")], perTarget + "_weighted_sum", Attr.Int("keepdims", 0));
        var total = editor.Add("ReduceSum", [weights], weightName + "_sum", Attr.Int("keepdims", 0));
        // All weights 0 gives loss 0 (and zero gradients) instead of PyTorch's 0/0.
        var tiny = editor.AddInitializer(elem == DataType.Double ? TensorProtos.Double(weightName + "_tiny", [1e-300]) : TensorProtos.Float(weightName + "_tiny", [1e-30f]));
        editor.AddNode("Div", [sum, editor.Add("Max", [total, tiny], weightName + "_sum_clamped")], [lossName]);
        return lossName;
    }

    private static object? DimObject(TensorShapeProto.Types.Dimension d) =>
        d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => d.DimValue,
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => d.DimParam,
            _ => null,
        };
}
