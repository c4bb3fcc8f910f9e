using Onnx;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Autodiff.Losses;
using OnnxTune.Onnx.Graph;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Artifacts;

/// <summary>The training and eval graphs made from one inference model.</summary>
/// <param name="Training">Forward + loss + gradients (+ accumulation when asked).</param>
/// <param name="Eval">Forward + loss, with the model outputs.</param>
/// <param name="Inputs">The model's data inputs.</param>
/// <param name="Outputs">The model's outputs.</param>
/// <param name="Trainable">Trainable parameters (graph inputs of both graphs).</param>
/// <param name="Frozen">Frozen parameters (initializers).</param>
/// <param name="GradientOutputs">Training-graph output holding each trainable parameter's gradient.</param>
/// <param name="UnusedParameters">Trainable parameters the loss does not depend on.</param>
public sealed record TrainingGraphs(
    ModelProto Training, ModelProto Eval,
    IReadOnlyList<TensorSpec> Inputs, IReadOnlyList<TensorSpec> Outputs,
    IReadOnlyList<TensorSpec> Trainable, IReadOnlyList<TensorSpec> Frozen,
    IReadOnlyList<string> GradientOutputs, IReadOnlyList<string> UnusedParameters)
{
    /// <summary>
    /// Non-trainable state (running mean/var of BatchNormalization layers that train with batch statistics): graph
    /// inputs of the training and eval graphs; the training graph outputs each one's update as <see cref="StateOutputs"/>.
    /// </summary>
    public IReadOnlyList<TensorSpec> State { get; init; } = [];

    /// <summary>Training-graph output with the updated value of each <see cref="State"/> tensor (same order).</summary>
    public IReadOnlyList<string> StateOutputs { get; init; } = [];

    /// <summary>
    /// Forward + loss as the training graph computes it (BatchNormalization with batch statistics), for finite
    /// differences; null when it equals <see cref="Eval"/>.
    /// </summary>
    public ModelProto? TrainModeEval { get; init; }
}

/// <summary>Builds training and eval graphs (standard ONNX ops only, symbolic batch) from an inference model.</summary>
public static class TrainingGraphBuilder
{
    /// <summary>
    /// Lowest default-domain opset of the graphs built (axes-as-inputs forms and opset-13 Softmax semantics); models at
    /// opset 11 and 12 are upgraded to it first (<see cref="UpgradeOpset"/>).
    /// </summary>
    public const long MinimumOpset = 13;

    /// <summary>Input that resets accumulated gradients on the next train step.</summary>
    public const string LazyResetGradInput = ArtifactContract.LazyResetGradInput;

    /// <summary>Suffix of the accumulation buffer input of a parameter's gradient.</summary>
    public const string AccumulationBufferSuffix = ArtifactContract.AccumulationBufferSuffix;

    /// <summary>Suffix of the training-graph output with the updated value of a non-trainable state tensor (BN running statistics).</summary>
    public const string StateOutputSuffix = ArtifactContract.StateOutputSuffix;

    /// <summary>Suffix of the accumulated gradient output of a parameter.</summary>
    public const string AccumulationOutputSuffix = ArtifactContract.AccumulationOutputSuffix;

    /// <summary>
    /// Returns <paramref name="model"/> itself when its default-domain opset is 13 or newer, and an equivalent copy at
    /// opset 13 when it is 11 or 12 (Softmax/LogSoftmax/Hardmax at a non-last axis become Flatten → op → Reshape;
    /// ReduceSum/Squeeze/Unsqueeze axes and Split sizes move from attributes to inputs; the opset-10/11 Dropout gets
    /// its ratio as an input). Initializer names are unchanged, so trained weights fit the original file too. The
    /// graph builders call this first.
    /// </summary>
    /// <exception cref="UnsupportedModelException">No default-domain opset, an opset below 11, or a node the upgrade cannot rewrite (Upsample, Scatter, a rewrite inside a subgraph).</exception>
    public static ModelProto UpgradeOpset(ModelProto model) => Transforms.OpsetUpgrade.Apply(model);

    /// <summary>Builds the graphs.</summary>
    /// <param name="source">The inference model (not modified; opsets 11 and 12 are upgraded to 13 first, see <see cref="UpgradeOpset"/>).</param>
    /// <param name="selection">Which initializers train.</param>
    /// <param name="loss">Loss settings; <see cref="LossSpec.OutputName"/> empty means the first output.</param>
    /// <param name="gradientAccumulation">Emit the accumulation inputs/outputs of the artifacts contract; otherwise output plain gradients named <c>&lt;p&gt;_grad</c>.</param>
    /// <param name="registry">Gradient rules (default registry when null).</param>
    /// <param name="batchNorm">BatchNormalization training behaviour (default: trainable layers use batch statistics, running statistics are state).</param>
    public static TrainingGraphs Build(ModelProto source, ParameterSelection selection, LossSpec loss, bool gradientAccumulation = true, GradientRuleRegistry? registry = null,
        BatchNormTraining? batchNorm = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(selection);
        ArgumentNullException.ThrowIfNull(loss);
        source = UpgradeOpset(source);
        var opset = CheckModel(source);
        var (trainable, frozen) = selection.Resolve(source);
        // Running statistics are never trainable parameters; those of layers training with batch statistics are state.
        batchNorm ??= new BatchNormTraining();
        var runningStats = BatchNormTrainingRewrite.RunningStatistics(source.Graph);
        trainable.RemoveAll(runningStats.Contains);
        // The default selection (every float initializer) leaves Clip bounds alone: ReLU6's 0 and 6 are constants
        // in PyTorch (exporters write them as initializers); name them explicitly to train them.
        if (selection.Trainable.Count == 0 && selection.TrainableNames.Count == 0)
        {
            var clipBounds = source.Graph.Node.Where(n => n.OpType == "Clip" && string.IsNullOrEmpty(n.Domain)).SelectMany(n => n.Input.Skip(1)).ToHashSet(StringComparer.Ordinal);
            trainable.RemoveAll(clipBounds.Contains);
            // Likewise a Pow exponent and the ε of a LayerNorm written out in element-wise ops (Python floats in PyTorch).
            var structural = source.Graph.Node.Where(n => n.OpType == "Pow" && string.IsNullOrEmpty(n.Domain) && n.Input.Count > 1).Select(n => n.Input[1])
                .Concat(Transforms.LayerNormFusion.Constants(source)).ToHashSet(StringComparer.Ordinal);
            trainable.RemoveAll(structural.Contains);
        }
        // A LayerNorm written out in element-wise ops trains as one LayerNormalization node (unless one of its
        // constants was selected to train).
        source = Transforms.LayerNormFusion.Apply(source, trainable.ToHashSet(StringComparer.Ordinal));
        opset = CheckModel(source);
        var bnNodes = BatchNormTrainingRewrite.Select(source.Graph, trainable.ToHashSet(StringComparer.Ordinal), batchNorm.Mode);
        var stateNames = batchNorm.StatisticsAsState ? bnNodes.SelectMany(n => new[] { n.Mean, n.Var }).ToList() : [];
        var trainableNow = trainable.ToHashSet(StringComparer.Ordinal);
        frozen = source.Graph.Initializer.Where(t => OnnxTune.Onnx.Tensors.TensorProtos.IsFloating((DataType)t.DataType))
            .Select(t => t.Name).Where(n => !trainableNow.Contains(n) && !stateNames.Contains(n)).ToList();

        var dataInputs = DataInputs(source);
        var outputs = source.Graph.Output.Select(Spec).ToList();
        var lossOutput = string.IsNullOrEmpty(loss.OutputName) ? source.Graph.Output[0] : source.Graph.Output.FirstOrDefault(o => o.Name == loss.OutputName)
            ?? throw new OnnxTuneException($"The loss output '{loss.OutputName}' is not an output of the model (outputs: {string.Join(", ", source.Graph.Output.Select(o => o.Name))}).");

        ModelProto Make(bool withBackward, out IReadOnlyList<string> gradOutputs, out IReadOnlyList<string> unused, bool batchStatistics = false, List<(string State, string Output)>? stateUpdates = null)
        {
            var model = source.Clone();
            var g = model.Graph;
            var editor = new GraphEditor(g);
            if (stateNames.Count > 0)
            {
                foreach (var name in stateNames)
                {
                    var t = g.Initializer.First(x => x.Name == name);
                    g.Initializer.Remove(t);
                    var existing = g.Input.FirstOrDefault(v => v.Name == name);
                    if (existing is not null) g.Input.Remove(existing);
                    g.Input.Add(ValueInfos.Tensor(name, (DataType)t.DataType, t.Dims.Select(d => (object?)d).ToArray()));
                }
            }
            if (batchStatistics && bnNodes.Count > 0) BatchNormTrainingRewrite.Apply(editor, bnNodes, stateUpdates);
            BatchNormTrainingRewrite.UseRunningStatistics(g);
            if (batchStatistics && stateUpdates is null && bnNodes.Count > 0)
            {
                // Batch statistics without updates (gradient checks): the running statistics are read by nothing.
                var read = g.Node.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
                foreach (var t in g.Initializer.Where(t => bnNodes.Any(b => b.Mean == t.Name || b.Var == t.Name) && !read.Contains(t.Name)).ToList())
                    g.Initializer.Remove(t);
            }
            var trainableSet = trainable.ToHashSet(StringComparer.Ordinal);
            var paramInfos = new List<ValueInfoProto>();
            for (var i = g.Initializer.Count - 1; i >= 0; i--)
            {
                var t = g.Initializer[i];
                if (!trainableSet.Contains(t.Name)) continue;
                g.Initializer.RemoveAt(i);
                var existing = g.Input.FirstOrDefault(v => v.Name == t.Name);
                if (existing is not null) g.Input.Remove(existing);
            }
            foreach (var name in trainable)
            {
                var t = source.Graph.Initializer.First(x => x.Name == name);
                var vi = ValueInfos.Tensor(name, (DataType)t.DataType, t.Dims.Select(d => (object?)d).ToArray());
                g.Input.Add(vi);
                paramInfos.Add(vi);
            }
            var modelOutputs = g.Output.ToList();
            var lossName = LossBlocks.Append(editor, loss with { OutputName = lossOutput.Name }, lossOutput);
            g.Output.Clear();
            g.Output.Add(ValueInfos.Tensor(lossName, ValueInfos.ElemType(lossOutput) == DataType.Double ? DataType.Double : DataType.Float, []));
            if (!withBackward)
            {
                g.Output.AddRange(modelOutputs);
                gradOutputs = [];
                unused = [];
                return model;
            }
            var result = new BackwardGraphBuilder(registry).Build(editor, lossName, trainable, opset);
            if (result.RequiredOpset > opset)
            {
                // E.g. ScatterND(reduction="add") for Gather gradients needs opset 16; the forward ops keep their
                // meaning between 13 and 16 (RoiAlign's default coordinate mode is the one exception).
                foreach (var import in model.OpsetImport.Where(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx"))
                    import.Version = result.RequiredOpset;
            }
            var names = new List<string>();
            if (gradientAccumulation)
            {
                var reset = editor.Reserve(LazyResetGradInput);
                g.Input.Add(ValueInfos.Tensor(reset, DataType.Bool, []));
                for (var i = 0; i < trainable.Count; i++)
                {
                    var p = paramInfos[i];
                    var buffer = editor.Reserve(trainable[i] + AccumulationBufferSuffix);
                    g.Input.Add(ValueInfos.Tensor(buffer, ValueInfos.ElemType(p), DimsOf(p)));
                    var sum = editor.Add("Add", [buffer, result.Gradients[i]], trainable[i] + "_grad_accumulated");
                    var output = editor.Reserve(trainable[i] + AccumulationOutputSuffix);
                    editor.AddNode("Where", [reset, result.Gradients[i], sum], [output]);
                    g.Output.Add(ValueInfos.Tensor(output, ValueInfos.ElemType(p), DimsOf(p)));
                    names.Add(output);
                }
                model.MetadataProps.Add(new StringStringEntryProto { Key = ArtifactContract.AccumulationTailKey, Value = ArtifactContract.AccumulationTailFormat });
            }
            else
            {
                for (var i = 0; i < trainable.Count; i++)
                {
                    var p = paramInfos[i];
                    var output = editor.Reserve(trainable[i] + "_grad");
                    editor.AddNode("Identity", [result.Gradients[i]], [output]);
                    g.Output.Add(ValueInfos.Tensor(output, ValueInfos.ElemType(p), DimsOf(p)));
                    names.Add(output);
                }
            }
            if (stateUpdates is not null)
                foreach (var (state, output) in stateUpdates)
                {
                    var t = source.Graph.Initializer.First(x => x.Name == state);
                    g.Output.Add(ValueInfos.Tensor(output, (DataType)t.DataType, t.Dims.Select(d => (object?)d).ToArray()));
                }
            gradOutputs = names;
            unused = result.UnusedParameters;
            return model;
        }

        var updates = batchNorm.StatisticsAsState ? new List<(string State, string Output)>() : null;
        var training = Make(true, out var grads, out var unusedParams, batchStatistics: true, stateUpdates: updates);
        var eval = Make(false, out _, out _);
        var trainModeEval = bnNodes.Count > 0 && !batchNorm.StatisticsAsState ? Make(false, out _, out _, batchStatistics: true) : null;
        var trainSpecs = trainable.Select(n => InitializerSpec(source, n)).ToList();
        var frozenSpecs = frozen.Select(n => InitializerSpec(source, n)).ToList();
        return new TrainingGraphs(training, eval, dataInputs, outputs, trainSpecs, frozenSpecs, grads, unusedParams)
        {
            State = stateNames.Select(n => InitializerSpec(source, n)).ToList(),
            StateOutputs = updates?.Select(u => u.Output).ToList() ?? [],
            TrainModeEval = trainModeEval,
        };
    }

    /// <summary>
    /// Checks opset and domains of a model ready for the backward builder; returns the default-domain opset. Models at
    /// opset 11 or 12 pass through <see cref="UpgradeOpset"/> first (the builders do that themselves).
    /// </summary>
    /// <exception cref="UnsupportedModelException">Opset below 13 or a node outside the default domain.</exception>
    public static long CheckModel(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var opset = model.OpsetImport.FirstOrDefault(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx")?.Version
            ?? throw new UnsupportedModelException("The model imports no default-domain (ai.onnx) opset.");
        if (opset < MinimumOpset)
            throw new UnsupportedModelException(
                opset >= Transforms.OpsetUpgrade.OldestUpgradable
                    ? $"The model uses opset {opset}; OnnxTune needs opset {MinimumOpset} or newer. Opsets 11 and 12 are upgraded automatically by the graph builders; call TrainingGraphBuilder.UpgradeOpset(model) before checking it directly."
                    : $"The model uses opset {opset}; OnnxTune needs opset {MinimumOpset} or newer (opsets 11 and 12 are upgraded to {MinimumOpset} automatically). Upgrade it first, e.g. in Python: " +
                      "onnx.save(onnx.version_converter.convert_version(onnx.load('model.onnx'), 17), 'model17.onnx'), or re-export with opset_version=17.");
        var foreign = model.Graph.Node.FirstOrDefault(n => !string.IsNullOrEmpty(n.Domain) && n.Domain != "ai.onnx");
        if (foreign is not null)
            throw new UnsupportedModelException(
                $"{foreign.Describe()} is in domain '{foreign.Domain}'; OnnxTune trains graphs of standard ONNX (default domain) operators only. Export the model without custom/contrib ops (e.g. without ORT-optimized fusions).");
        return opset;
    }

    /// <summary>Graph inputs that are not initializers.</summary>
    public static List<TensorSpec> DataInputs(ModelProto model)
    {
        var inits = model.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        return model.Graph.Input.Where(i => !inits.Contains(i.Name)).Select(Spec).ToList();
    }

    /// <summary>A tensor spec from a value info.</summary>
    public static TensorSpec Spec(ValueInfoProto v) =>
        new(v.Name, ElementTypeName(ValueInfos.ElemType(v)),
            v.Type?.TensorType?.Shape?.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture) : string.IsNullOrEmpty(d.DimParam) ? "?" : d.DimParam).ToList() ?? []);

    private static TensorSpec InitializerSpec(ModelProto model, string name)
    {
        var t = model.Graph.Initializer.First(x => x.Name == name);
        return new(name, ElementTypeName((DataType)t.DataType), t.Dims.Select(d => d.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList());
    }

    /// <summary>Lower-case element type name (<c>float</c>, <c>int64</c>, ...).</summary>
    public static string ElementTypeName(DataType t) => t switch
    {
        DataType.Float => "float",
        DataType.Double => "double",
        DataType.Int64 => "int64",
        DataType.Int32 => "int32",
        DataType.Bool => "bool",
        DataType.Float16 => "float16",
        DataType.Uint8 => "uint8",
        DataType.Int8 => "int8",
        _ => t.ToString().ToLowerInvariant(),
    };

    private static object?[] DimsOf(ValueInfoProto v) =>
        v.Type.TensorType.Shape.Dim.Select(d => (object?)d.DimValue).ToArray();
}
