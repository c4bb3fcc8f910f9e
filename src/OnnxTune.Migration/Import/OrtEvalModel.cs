using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Migration.Checkpoints;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Migration.Import;

/// <summary>
/// The forward model and loss recovered from an ORT eval model (what <c>generate_artifacts</c> writes: the model with
/// its trainable and frozen parameters as graph inputs, the loss block appended, the loss as first graph output).
/// </summary>
/// <param name="Forward">The model with the parameters back as initializers (checkpoint values) and the loss removed.</param>
/// <param name="Loss">The OnnxTune loss equal to ORT's loss block.</param>
/// <param name="DataInputs">The eval model's inputs that are not parameters, in order (what an ORT app feeds).</param>
/// <param name="LossDescription">What was found, for the import report.</param>
public sealed record OrtEvalModel(ModelProto Forward, LossSpec Loss, IReadOnlyList<string> DataInputs, string LossDescription)
{
    /// <summary>Rebuilds the forward model of <paramref name="eval"/> with the values of <paramref name="checkpoint"/>.</summary>
    /// <exception cref="OrtImportException">A non-default-domain op, a loss block it does not recognise, or parameters that do not match.</exception>
    public static OrtEvalModel FromEvalModel(ModelProto eval, OrtCheckpoint checkpoint, string file)
    {
        var model = eval.Clone();
        var graph = model.Graph;
        foreach (var n in graph.Node)
            if (n.Domain is not ("" or "ai.onnx"))
                throw new OrtImportException(OrtImportErrorKind.UnsupportedOperator, $"{n.Domain}.{n.OpType}",
                    $"{file}: node '{n.Name}' is {n.Domain}.{n.OpType}; OnnxTune trains default-domain ONNX ops only, so an eval model with {n.Domain} ops cannot be imported.");
        if (graph.Output.Count == 0)
            throw new OrtImportException(OrtImportErrorKind.UnsupportedModel, file, $"{file} has no graph output (the loss).");

        // Parameters back to initializers.
        var values = checkpoint.Trainable.Concat(checkpoint.Frozen).ToDictionary(t => t.Name, StringComparer.Ordinal);
        var inputs = graph.Input.ToList();
        var initializerNames = graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in values.Keys)
            if (!inputs.Any(i => i.Name == name) && !initializerNames.Contains(name))
                throw new OrtImportException(OrtImportErrorKind.ParameterMismatch, name, $"Checkpoint parameter '{name}' is neither an input nor an initializer of {file}.");
        graph.Input.Clear();
        var dataInputs = new List<string>();
        foreach (var input in inputs)
        {
            if (!values.TryGetValue(input.Name, out var t))
            {
                graph.Input.Add(input);
                dataInputs.Add(input.Name);
                continue;
            }
            var dims = input.Type?.TensorType?.Shape?.Dim.Select(d => d.HasDimValue ? d.DimValue : -1).ToArray();
            if (dims is not null && dims.Length > 0 && !dims.SequenceEqual(t.Dims))
                throw new OrtImportException(OrtImportErrorKind.ParameterMismatch, input.Name,
                    $"Parameter '{input.Name}' is [{string.Join(",", dims)}] in {file} but [{string.Join(",", t.Dims)}] in the checkpoint.");
            graph.Initializer.Add(new TensorProto
            {
                Name = t.Name,
                DataType = (int)(t.IsDouble ? DataType.Double : DataType.Float),
                Dims = { t.Dims },
                RawData = ByteString.CopyFrom(t.Data),
            });
        }

        var lossName = graph.Output[0].Name;
        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            foreach (var o in n.Output.Where(o => o.Length > 0))
                producers[o] = n;
        NodeProto? Producer(string name) => producers.GetValueOrDefault(name);
        bool IsDataInput(string name) => dataInputs.Contains(name);

        var lossNode = Producer(lossName)
            ?? throw new OrtImportException(OrtImportErrorKind.UnsupportedModel, lossName, $"{file}: the loss output '{lossName}' is not produced by a node.");
        LossSpec loss;
        string scores, label, description;
        List<NodeProto> lossNodes;
        if (lossNode.OpType == "SoftmaxCrossEntropyLoss")
        {
            var reduction = lossNode.Attribute.FirstOrDefault(a => a.Name == "reduction")?.S.ToStringUtf8() ?? "mean";
            if (reduction != "mean")
                throw Unsupported(file, "SoftmaxCrossEntropyLoss.reduction", $"{file}: SoftmaxCrossEntropyLoss has reduction '{reduction}'; OnnxTune's cross-entropy is the mean.");
            if (lossNode.Input.Count > 2 && lossNode.Input[2].Length > 0)
                throw Unsupported(file, "SoftmaxCrossEntropyLoss.weights", $"{file}: SoftmaxCrossEntropyLoss has class weights ('{lossNode.Input[2]}'), which OnnxTune's cross-entropy does not take.");
            (scores, label) = (lossNode.Input[0], lossNode.Input[1]);
            var ignore = lossNode.Attribute.FirstOrDefault(a => a.Name == "ignore_index");
            loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = scores, LabelName = label, LabelElementType = "int64", IgnoreIndex = ignore?.I };
            lossNodes = [lossNode];
            description = $"SoftmaxCrossEntropyLoss(mean{(ignore is null ? "" : $", ignore_index {ignore.I}")}) → cross-entropy";
        }
        else if (lossNode.OpType == "ReduceMean" && Producer(lossNode.Input[0]) is { } inner
                 && (inner.OpType == "Abs" || (inner.OpType == "Pow" && IsTwo(graph, inner.Input[1])))
                 && Producer(inner.Input[0]) is { OpType: "Sub" } sub && IsDataInput(sub.Input[1]))
        {
            (scores, label) = (sub.Input[0], sub.Input[1]);
            var kind = inner.OpType == "Abs" ? LossKind.L1 : LossKind.Mse;
            loss = new LossSpec { Kind = kind, OutputName = scores, LabelName = label, LabelElementType = "float" };
            lossNodes = [lossNode, inner, sub];
            description = kind == LossKind.Mse ? "ReduceMean(Pow(Sub(output, target), 2)) → MSE" : "ReduceMean(Abs(Sub(output, target))) → L1";
        }
        else
        {
            throw Unsupported(file, lossNode.OpType,
                $"{file}: the loss '{lossName}' comes from {lossNode.OpType} ('{lossNode.Name}'), not one of the loss blocks ORT's generate_artifacts writes that the importer maps (CrossEntropyLoss, MSELoss, L1Loss).");
        }
        if (!IsDataInput(label))
            throw Unsupported(file, label, $"{file}: the loss target '{label}' is not a graph input.");
        foreach (var n in lossNodes) graph.Node.Remove(n);
        var removedOutputs = lossNodes.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        var stillUsed = graph.Node.SelectMany(n => n.Input).Where(removedOutputs.Contains).FirstOrDefault();
        if (stillUsed is not null)
            throw Unsupported(file, stillUsed, $"{file}: '{stillUsed}' of the loss block is also used by the model, so the loss cannot be separated from it.");
        foreach (var unused in graph.Initializer.Where(t => !graph.Node.Any(n => n.Input.Contains(t.Name))).ToList())
            graph.Initializer.Remove(unused); // the MSE exponent
        var labelInput = graph.Input.First(i => i.Name == label);
        graph.Input.Remove(labelInput);
        graph.Output.Clear();
        graph.Output.Add(new ValueInfoProto { Name = scores, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DataType.Float } } });
        graph.ValueInfo.Clear();
        graph.Output[0] = InferOutput(model, scores, file);
        return new OrtEvalModel(model, loss, dataInputs, description);
    }

    // The eval model declares only the loss; ONNX Runtime's shape inference gives the scores' type and (symbolic) shape.
    private static ValueInfoProto InferOutput(ModelProto model, string name, string file)
    {
        try
        {
            using var session = new InferenceSession(OnnxTune.Onnx.ModelIO.OnnxModelWriter.ToBytes(model));
            var meta = session.OutputMetadata[name];
            var shape = new TensorShapeProto();
            for (var i = 0; i < meta.Dimensions.Length; i++)
                shape.Dim.Add(meta.Dimensions[i] >= 0
                    ? new TensorShapeProto.Types.Dimension { DimValue = meta.Dimensions[i] }
                    : new TensorShapeProto.Types.Dimension { DimParam = string.IsNullOrEmpty(meta.SymbolicDimensions[i]) ? $"{name}_dim{i}" : meta.SymbolicDimensions[i] });
            var type = meta.ElementDataType switch
            {
                Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Double => DataType.Double,
                _ => DataType.Float,
            };
            return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
        }
        catch (OnnxRuntimeException e)
        {
            throw new OrtImportException(OrtImportErrorKind.UnsupportedModel, name, $"{file}: ONNX Runtime cannot load the forward model recovered from the eval model: {e.Message}", e);
        }
    }

    private static bool IsTwo(GraphProto graph, string name)
    {
        var t = graph.Initializer.FirstOrDefault(i => i.Name == name);
        if (t is null) return false;
        return (DataType)t.DataType switch
        {
            DataType.Float => OnnxTune.Onnx.Tensors.TensorProtos.ToFloatArray(t) is [2f],
            DataType.Double => OnnxTune.Onnx.Tensors.TensorProtos.ToDoubleArray(t) is [2.0],
            _ => false,
        };
    }

    private static OrtImportException Unsupported(string file, string subject, string message) =>
        new(OrtImportErrorKind.UnsupportedModel, subject, message);
}
