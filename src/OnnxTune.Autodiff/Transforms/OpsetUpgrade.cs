using Onnx;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Autodiff.Transforms;

/// <summary>
/// Upgrades a model whose default-domain opset is 11 or 12 to an equivalent opset-13 model, so the opset-13 forms
/// the backward rules emit can be mixed with the forward graph. The caller's model is never modified: an upgrade
/// works on a copy, and a model already at opset 13 or newer is returned as is.
/// </summary>
/// <remarks>
/// Following the ONNX operator changelog (and onnx's version_converter adapters 11→12 and 12→13), the default-domain
/// ops whose signature or meaning changed between opsets 11 and 13 are:
/// <list type="bullet">
/// <item>Softmax, LogSoftmax, Hardmax (13): before 13 the input is coerced to 2-D at <c>axis</c> (default 1). A node
/// already normalising the last dim keeps its place with <c>axis=-1</c>; any other becomes
/// <c>Flatten(axis) → op(axis=-1) → Reshape(Shape(x))</c>.</item>
/// <item>ReduceSum, Squeeze, Unsqueeze (13): the <c>axes</c> attribute becomes an int64 input (initializer).</item>
/// <item>Split (13): the <c>split</c> attribute becomes an int64 input (initializer).</item>
/// <item>Dropout (12): the <c>ratio</c> attribute of the opset-10 form becomes the optional ratio input (a Constant
/// node, so that no float initializer appears that a parameter selection could pick); training_mode stays absent,
/// which is inference mode, as in the exported graph.</item>
/// </list>
/// The other changes in that range only add types or optional attributes whose defaults keep the old meaning
/// (ArgMax/ArgMin select_last_index, GatherND batch_dims, Clip, Pad, Resize, Constant, BatchNormalization, Max/Min,
/// MaxPool, Pow, ReduceMax/ReduceMin, QuantizeLinear/DequantizeLinear axis, If/Loop, ...): those nodes are left alone.
/// Upsample (deprecated since opset 10) and Scatter (deprecated since 11) are not valid at these opsets and are
/// refused, as are rewrites inside control-flow subgraphs and model-local functions.
/// </remarks>
internal sealed class OpsetUpgrade
{
    /// <summary>The opset models are upgraded to.</summary>
    public const long TargetOpset = 13;

    /// <summary>The oldest opset upgraded.</summary>
    public const long OldestUpgradable = 11;

    private static readonly HashSet<string> SoftmaxFamily = new(StringComparer.Ordinal) { "Softmax", "LogSoftmax", "Hardmax" };
    private static readonly HashSet<string> AxesToInput = new(StringComparer.Ordinal) { "ReduceSum", "Squeeze", "Unsqueeze" };

    private readonly long _opset;
    private readonly GraphEditor _editor;
    private Dictionary<string, TensorTypeInfo>? _types;

    private OpsetUpgrade(ModelProto model, long opset)
    {
        _opset = opset;
        _editor = new GraphEditor(model.Graph);
    }

    /// <summary>The default-domain opset import of <paramref name="model"/>, or null.</summary>
    public static long? DefaultOpset(ModelProto model) =>
        model.OpsetImport.FirstOrDefault(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx")?.Version;

    /// <summary>
    /// <see cref="Apply"/> for a model at opset 11 or 12; any other model (no default-domain import, an older or a
    /// newer opset) is returned as is, for transforms that leave refusing it to the graph builders.
    /// </summary>
    public static ModelProto ApplyIfUpgradable(ModelProto model) =>
        DefaultOpset(model) is { } v && v >= OldestUpgradable && v < TargetOpset ? Apply(model) : model;

    /// <summary>
    /// Returns <paramref name="model"/> itself when its default-domain opset is 13 or newer, an upgraded copy at
    /// opset 13 when it is 11 or 12.
    /// </summary>
    /// <exception cref="UnsupportedModelException">No default-domain opset, an opset below 11, or a node the upgrade cannot rewrite.</exception>
    public static ModelProto Apply(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var opset = DefaultOpset(model) ?? throw new UnsupportedModelException("The model imports no default-domain (ai.onnx) opset.");
        if (opset >= TargetOpset) return model;
        if (opset < OldestUpgradable)
            throw new UnsupportedModelException(
                $"The model uses opset {opset}; OnnxTune needs opset {TargetOpset} or newer (opsets {OldestUpgradable} and 12 are upgraded to {TargetOpset} automatically). " +
                "Upgrade it first, e.g. in Python: onnx.save(onnx.version_converter.convert_version(onnx.load('model.onnx'), 17), 'model17.onnx'), or re-export with opset_version=17.");
        if (model.Graph is null) throw new UnsupportedModelException("The model has no graph.");

        if (model.Functions.Count > 0)
            throw new UnsupportedModelException(
                $"The model (opset {opset}) has model-local functions ({string.Join(", ", model.Functions.Select(f => f.Name))}); the automatic upgrade to opset {TargetOpset} does not rewrite functions. Convert it with onnx.version_converter or re-export with opset_version=17.");
        foreach (var node in model.Graph.Node)
        {
            Refuse(node, opset, null);
            foreach (var sub in Subgraphs(node))
                CheckSubgraph(sub, node, opset);
        }

        var result = model.Clone();
        new OpsetUpgrade(result, opset).Rewrite();
        foreach (var import in result.OpsetImport.Where(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx"))
            import.Version = TargetOpset;
        // Opset 13 belongs to IR version 7.
        if (result.IrVersion < 7) result.IrVersion = 7;
        return result;
    }

    private static IEnumerable<GraphProto> Subgraphs(NodeProto node)
    {
        foreach (var a in node.Attribute)
        {
            if (a.G is not null) yield return a.G;
            foreach (var g in a.Graphs) yield return g;
        }
    }

    private static void Refuse(NodeProto node, long opset, NodeProto? owner)
    {
        if (!string.IsNullOrEmpty(node.Domain) && node.Domain != "ai.onnx") return;
        var where = owner is null ? "" : $" (in a subgraph of {owner.Describe()})";
        switch (node.OpType)
        {
            case "Upsample":
                throw new UnsupportedModelException(
                    $"{node.Describe()}{where}: Upsample is deprecated since opset 10 and is not valid in this opset-{opset} model; re-export it with Resize (opset 13 or newer).");
            case "Scatter":
                throw new UnsupportedModelException(
                    $"{node.Describe()}{where}: Scatter is deprecated since opset 11 and is not valid in this opset-{opset} model; re-export it with ScatterElements.");
        }
    }

    private static void CheckSubgraph(GraphProto graph, NodeProto owner, long opset)
    {
        foreach (var node in graph.Node)
        {
            Refuse(node, opset, owner);
            if (NeedsRewrite(node, opset))
                throw new UnsupportedModelException(
                    $"{node.Describe()} is inside a subgraph of {owner.Describe()}; its meaning changed between opset {opset} and {TargetOpset} and the automatic upgrade rewrites the main graph only. " +
                    "Convert the model with onnx.version_converter or re-export it with opset_version=17.");
            foreach (var sub in Subgraphs(node))
                CheckSubgraph(sub, node, opset);
        }
    }

    /// <summary>True when the node's opset-11/12 form differs from its opset-13 form.</summary>
    internal static bool NeedsRewrite(NodeProto node, long opset)
    {
        if (!string.IsNullOrEmpty(node.Domain) && node.Domain != "ai.onnx") return false;
        if (SoftmaxFamily.Contains(node.OpType)) return node.GetInt("axis", 1) != -1;
        if (AxesToInput.Contains(node.OpType)) return node.Find("axes") is not null;
        if (node.OpType == "Split") return node.Find("split") is not null;
        if (node.OpType == "Dropout") return opset < 12 && node.Find("ratio") is not null;
        return false;
    }

    private void Rewrite()
    {
        var graph = _editor.Graph;
        var original = graph.Node.ToList();
        // Ranks of the Softmax inputs come from the untouched graph (rewrites below edit nodes in place).
        if (original.Any(n => SoftmaxFamily.Contains(n.OpType) && NeedsRewrite(n, _opset))) _types = InferTypes(graph);
        var rewritten = new List<NodeProto>(original.Count);
        foreach (var node in original)
        {
            if (!NeedsRewrite(node, _opset)) { rewritten.Add(node); continue; }
            if (SoftmaxFamily.Contains(node.OpType)) rewritten.AddRange(RewriteSoftmax(node));
            else if (AxesToInput.Contains(node.OpType)) rewritten.AddRange(AttributeToInput(node, "axes"));
            else if (node.OpType == "Split") rewritten.AddRange(AttributeToInput(node, "split"));
            else if (node.OpType == "Dropout") rewritten.AddRange(RewriteDropout(node));
            else rewritten.Add(node);
        }
        graph.Node.Clear();
        graph.Node.AddRange(rewritten);
    }

    // Ranks are an optimisation (the last-dim case keeps one node); without them the general rewrite is used.
    private static Dictionary<string, TensorTypeInfo> InferTypes(GraphProto graph)
    {
        try
        {
            return TensorTypeInference.Run(graph, TopologicalOrder.Sort(graph), new ConstantTable(graph));
        }
        catch (OnnxTuneException)
        {
            return new Dictionary<string, TensorTypeInfo>(StringComparer.Ordinal);
        }
    }

    private int? RankOf(string tensor) => _types is not null && _types.TryGetValue(tensor, out var t) ? t.Rank : null;

    private static void SetAxis(NodeProto node, long axis)
    {
        var a = node.Find("axis");
        if (a is null) node.Attribute.Add(Attr.Int("axis", axis));
        else a.I = axis;
    }

    // Opset < 13: y = reshape(op(flatten(x, axis), 1), shape(x)); the last-dim case is op(x, axis=-1) at every opset.
    private IEnumerable<NodeProto> RewriteSoftmax(NodeProto node)
    {
        var axis = node.GetInt("axis", 1);
        var x = node.Input[0];
        var rank = RankOf(x);
        if (rank is { } r && (axis == r - 1 || axis == -1))
        {
            SetAxis(node, -1);
            return [node];
        }
        var hint = string.IsNullOrEmpty(node.Name) ? node.Output[0] : node.Name;
        var flat = _editor.UniqueName(hint + "_opset13_flat");
        var flatten = Make("Flatten", [x], flat, hint + "_opset13_flatten", Attr.Int("axis", axis));
        var y = node.Output[0];
        var y2d = _editor.UniqueName(hint + "_opset13_2d");
        node.Input[0] = flat;
        node.Output[0] = y2d;
        SetAxis(node, -1);
        var shapeOut = _editor.UniqueName(hint + "_opset13_shape");
        var shape = Make("Shape", [x], shapeOut, hint + "_opset13_shape_of_input");
        var reshape = Make("Reshape", [y2d, shapeOut], y, hint + "_opset13_reshape");
        return [flatten, node, shape, reshape];
    }

    private IEnumerable<NodeProto> AttributeToInput(NodeProto node, string attribute)
    {
        var a = node.Find(attribute)!;
        var values = a.Ints.ToArray();
        node.Attribute.Remove(a);
        // An empty axes list means the default (all axes); the opset-13 form expresses it with no input.
        if (values.Length == 0 && attribute == "axes") return [node];
        var hint = string.IsNullOrEmpty(node.Name) ? node.Output[0] : node.Name;
        var name = _editor.AddInitializer(TensorProtos.Int64(hint + "_" + attribute, values, values.Length));
        // Split may list optional inputs after 'split' in later opsets only; at 11/12 the node has just the data input.
        while (node.Input.Count > 1) node.Input.RemoveAt(node.Input.Count - 1);
        node.Input.Add(name);
        return [node];
    }

    private IEnumerable<NodeProto> RewriteDropout(NodeProto node)
    {
        var a = node.Find("ratio")!;
        var ratio = a.F;
        node.Attribute.Remove(a);
        var hint = string.IsNullOrEmpty(node.Name) ? node.Output[0] : node.Name;
        var ratioName = _editor.UniqueName(hint + "_ratio");
        var constant = Make("Constant", [], ratioName, hint + "_ratio_constant", Attr.Tensor("value", TensorProtos.Float("ratio", [ratio])));
        while (node.Input.Count > 1) node.Input.RemoveAt(node.Input.Count - 1);
        node.Input.Add(ratioName);
        return [constant, node];
    }

    private NodeProto Make(string opType, string[] inputs, string output, string nameHint, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = _editor.UniqueName(nameHint) };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        node.Attribute.AddRange(attributes);
        return node;
    }
}
