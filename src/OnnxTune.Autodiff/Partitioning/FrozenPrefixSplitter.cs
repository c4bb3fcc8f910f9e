using System.Security.Cryptography;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Partitioning;

/// <summary>
/// Splits an inference model where its frozen part meets its trainable part. The prefix computes, from the data
/// inputs, every tensor the trainable part reads that depends on no trainable parameter (the frontier); it can run
/// once per example with a plain inference session. The suffix reads the frontier tensors (and any data input it
/// still reads directly) and computes the original outputs; training artifacts are built from the suffix.
/// </summary>
/// <remarks>
/// Frontier tensors must carry the batch on dim 0 so that they can be cached per example. Tensors whose value does
/// not depend on data values (shape arithmetic such as <c>Shape → Gather → Unsqueeze → Concat</c>, constants, and
/// computations on initializers only) have no batch dim, so instead of becoming frontier tensors their producers
/// are copied into the suffix and recomputed there; a <c>Shape</c> node copied this way reads its input from the
/// frontier (or a data input). Models with control-flow subgraphs (If, Loop, Scan) are not split.
/// </remarks>
public static class FrozenPrefixSplitter
{
    private static readonly HashSet<string> ShapeOnlyOps = new(StringComparer.Ordinal) { "Shape", "Size" };

    /// <summary>Splits <paramref name="model"/> (not modified) given the names of its trainable initializers.</summary>
    /// <param name="model">The inference model.</param>
    /// <param name="trainableParameters">Trainable initializer names (e.g. from <see cref="ParameterSelection.Resolve"/>).</param>
    /// <exception cref="PrefixSplitException">A name is not an initializer, the model has control flow, a frontier
    /// tensor's element type cannot be inferred, or there is no frozen prefix to cache.</exception>
    public static PrefixSplit Split(ModelProto model, IReadOnlyCollection<string> trainableParameters)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(trainableParameters);
        var graph = model.Graph ?? throw new PrefixSplitException("The model has no graph.");
        var initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var p in trainableParameters)
            if (!initializers.ContainsKey(p))
                throw new PrefixSplitException($"Trainable parameter '{p}' is not an initializer of graph '{graph.Name}'.");
        if (trainableParameters.Count == 0)
            throw new PrefixSplitException("No trainable parameters were given; the whole model is frozen, so there is nothing to split.");
        var controlFlow = graph.Node.FirstOrDefault(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0));
        if (controlFlow is not null)
            throw new PrefixSplitException($"{controlFlow.Describe()} holds a subgraph; the frozen-prefix splitter does not split models with control flow.");
        // The suffix becomes training artifacts: split the opset-13 form of an opset-11/12 model, so prefix and
        // suffix agree with the inference model the artifacts serve.
        model = Transforms.OpsetUpgrade.ApplyIfUpgradable(model);
        graph = model.Graph;
        initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);

        var order = TopologicalOrder.Sort(graph);
        var types = TensorTypeInference.Run(graph, order, new ConstantTable(graph));
        var dataInputs = graph.Input.Where(i => !initializers.ContainsKey(i.Name)).ToList();
        var dataInputNames = dataInputs.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in order) foreach (var o in n.Output) if (o.Length > 0) producer[o] = n;

        // Tensors that depend on a trainable parameter, and tensors whose values depend on data values
        // (Shape and Size only look at the shape, so they cut that dependency).
        var trainDependent = new HashSet<string>(trainableParameters, StringComparer.Ordinal);
        var valueDependent = new HashSet<string>(dataInputNames, StringComparer.Ordinal);
        var suffixNodes = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        foreach (var node in order)
        {
            if (node.Input.Any(trainDependent.Contains))
            {
                suffixNodes.Add(node);
                foreach (var o in node.Output) if (o.Length > 0) trainDependent.Add(o);
            }
            if (!ShapeOnlyOps.Contains(node.OpType) && node.Input.Any(valueDependent.Contains))
                foreach (var o in node.Output) if (o.Length > 0) valueDependent.Add(o);
        }

        // Walk back from what the trainable part reads: value-dependent tensors become frontier tensors (or stay
        // data inputs); the producers of the others are recomputed in the suffix.
        var frontier = new List<string>();
        var frontierSet = new HashSet<string>(StringComparer.Ordinal);
        var passthrough = new HashSet<string>(StringComparer.Ordinal);
        var visited = new HashSet<string>(StringComparer.Ordinal);
        // Breadth-first from the trainable part's reads in graph order, so the frontier lists first consumers first.
        var queue = order.Where(suffixNodes.Contains).SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToList();
        var index = 0;
        while (index < queue.Count)
        {
            var t = queue[index++];
            if (t.Length == 0 || trainDependent.Contains(t) || initializers.ContainsKey(t) || !visited.Add(t)) continue;
            if (dataInputNames.Contains(t)) { passthrough.Add(t); continue; }
            if (!producer.TryGetValue(t, out var p))
                throw new PrefixSplitException($"Graph output '{t}' is not a graph input, an initializer or any node's output.");
            if (valueDependent.Contains(t))
            {
                if (frontierSet.Add(t)) frontier.Add(t);
                continue;
            }
            if (suffixNodes.Add(p)) queue.AddRange(p.Input);
        }
        var trainDependentNodes = order.Count(n => n.Output.Any(trainDependent.Contains));
        if (frontier.Count == 0)
            throw new PrefixSplitException(
                "There is no frozen prefix to cache: the trainable parameters are used directly on the data inputs (" +
                string.Join(", ", dataInputNames) + "), so every computation depends on them.");

        var frontierSpecs = frontier.Select(f => FrontierSpec(f, types, dataInputs)).ToList();
        var prefix = BuildPrefix(model, order, producer, frontier, frontierSpecs, dataInputs);
        var suffix = BuildSuffix(model, order, suffixNodes, frontierSpecs, passthrough, initializers, dataInputs);
        var prefixSha = Convert.ToHexStringLower(SHA256.HashData(OnnxModelWriter.ToBytes(prefix)));
        var manifest = new PrefixSplitManifest
        {
            PrefixSha256 = prefixSha,
            Frontier = frontierSpecs,
            PassthroughInputs = dataInputs.Where(i => passthrough.Contains(i.Name)).Select(TrainingGraphBuilder.Spec).ToList(),
            Inputs = dataInputs.Select(TrainingGraphBuilder.Spec).ToList(),
            TrainableParameters = trainableParameters.ToList(),
            PrefixNodeCount = prefix.Graph.Node.Count,
            SuffixNodeCount = suffix.Graph.Node.Count,
            RecomputedNodeCount = suffixNodes.Count - trainDependentNodes,
        };
        return new PrefixSplit(prefix, suffix, manifest);
    }

    private static TensorSpec FrontierSpec(string name, Dictionary<string, TensorTypeInfo> types, List<ValueInfoProto> dataInputs)
    {
        if (!types.TryGetValue(name, out var info) || info.ElementType == DataType.Undefined)
            throw new PrefixSplitException($"The element type of frontier tensor '{name}' cannot be inferred; add a value_info for it to the model.");
        var batch = dataInputs.Select(i => i.Type?.TensorType?.Shape?.Dim.FirstOrDefault()?.DimParam)
            .FirstOrDefault(p => !string.IsNullOrEmpty(p)) ?? "batch";
        var dims = info.Dims is null
            ? []
            : info.Dims.Select((d, i) => d is { } v ? v.ToString(System.Globalization.CultureInfo.InvariantCulture) : i == 0 ? batch : "?").ToList();
        if (info.Dims is null)
            throw new PrefixSplitException($"The rank of frontier tensor '{name}' ({TrainingGraphBuilder.ElementTypeName(info.ElementType)}) cannot be inferred; add a value_info for it to the model.");
        if (info.Dims.Length == 0)
            throw new PrefixSplitException($"Frontier tensor '{name}' is a scalar computed from data values; frontier tensors need the batch on dim 0 to be cached per example.");
        return new TensorSpec(name, TrainingGraphBuilder.ElementTypeName(info.ElementType), dims);
    }

    private static ValueInfoProto ValueInfoOf(TensorSpec spec, DataType type)
    {
        var dims = spec.Shape.Select(d => long.TryParse(d, out var v) ? (object?)v : d == "?" ? null : d).ToArray();
        return ValueInfos.Tensor(spec.Name, type, dims);
    }

    private static ModelProto EmptyLike(ModelProto model, string graphName)
    {
        var copy = model.Clone();
        copy.Graph = new GraphProto { Name = graphName, DocString = model.Graph.DocString };
        return copy;
    }

    private static ModelProto BuildPrefix(ModelProto model, List<NodeProto> order, Dictionary<string, NodeProto> producer,
        List<string> frontier, List<TensorSpec> specs, List<ValueInfoProto> dataInputs)
    {
        var needed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<string>(frontier);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (stack.Count > 0)
        {
            var t = stack.Pop();
            if (t.Length == 0 || !seen.Add(t) || !producer.TryGetValue(t, out var p)) continue;
            if (needed.Add(p)) foreach (var i in p.Input) stack.Push(i);
        }
        var result = EmptyLike(model, model.Graph.Name + "_frozen_prefix");
        var g = result.Graph;
        g.Node.AddRange(order.Where(needed.Contains).Select(n => n.Clone()));
        var used = g.Node.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        g.Input.AddRange(dataInputs.Where(i => used.Contains(i.Name)).Select(i => i.Clone()));
        g.Initializer.AddRange(model.Graph.Initializer.Where(t => used.Contains(t.Name)).Select(t => t.Clone()));
        var produced = g.Node.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        g.ValueInfo.AddRange(model.Graph.ValueInfo.Where(v => produced.Contains(v.Name) && !frontier.Contains(v.Name)).Select(v => v.Clone()));
        for (var i = 0; i < frontier.Count; i++)
            g.Output.Add(ValueInfoOf(specs[i], ElementType(specs[i])));
        return result;
    }

    private static ModelProto BuildSuffix(ModelProto model, List<NodeProto> order, HashSet<NodeProto> suffixNodes,
        List<TensorSpec> frontier, HashSet<string> passthrough, Dictionary<string, TensorProto> initializers, List<ValueInfoProto> dataInputs)
    {
        var result = EmptyLike(model, model.Graph.Name + "_trainable_suffix");
        var g = result.Graph;
        g.Node.AddRange(order.Where(suffixNodes.Contains).Select(n => n.Clone()));
        g.Input.AddRange(dataInputs.Where(i => passthrough.Contains(i.Name)).Select(i => i.Clone()));
        foreach (var f in frontier) g.Input.Add(ValueInfoOf(f, ElementType(f)));
        var used = g.Node.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        // Keep initializers listed as graph inputs (older exporters) in the same form.
        foreach (var i in model.Graph.Input)
            if (initializers.ContainsKey(i.Name) && used.Contains(i.Name)) g.Input.Add(i.Clone());
        g.Initializer.AddRange(model.Graph.Initializer.Where(t => used.Contains(t.Name)).Select(t => t.Clone()));
        var produced = g.Node.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        g.ValueInfo.AddRange(model.Graph.ValueInfo.Where(v => produced.Contains(v.Name)).Select(v => v.Clone()));
        g.Output.AddRange(model.Graph.Output.Select(o => o.Clone()));
        return result;
    }

    private static DataType ElementType(TensorSpec spec) => spec.ElementType switch
    {
        "float" => DataType.Float,
        "double" => DataType.Double,
        "int64" => DataType.Int64,
        "int32" => DataType.Int32,
        "bool" => DataType.Bool,
        "float16" => DataType.Float16,
        "uint8" => DataType.Uint8,
        "int8" => DataType.Int8,
        var other => Enum.TryParse<DataType>(other, ignoreCase: true, out var t) ? t
            : throw new PrefixSplitException($"Frontier tensor '{spec.Name}' has element type '{other}', which the splitter cannot declare."),
    };
}
