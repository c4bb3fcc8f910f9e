using Onnx;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Onnx.Graph;

/// <summary>
/// Edits a <see cref="GraphProto"/> in place: adds nodes, inputs, outputs and initializers, and hands out
/// names that are unique in the graph (ORT's <c>&lt;node&gt;_Grad/</c> idea).
/// </summary>
public sealed class GraphEditor
{
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _counters = new(StringComparer.Ordinal);

    /// <summary>Wraps <paramref name="graph"/>; every name already used in it is reserved.</summary>
    public GraphEditor(GraphProto graph)
    {
        Graph = graph ?? throw new ArgumentNullException(nameof(graph));
        foreach (var i in graph.Input) _names.Add(i.Name);
        foreach (var o in graph.Output) _names.Add(o.Name);
        foreach (var t in graph.Initializer) _names.Add(t.Name);
        foreach (var v in graph.ValueInfo) _names.Add(v.Name);
        foreach (var n in graph.Node)
        {
            if (!string.IsNullOrEmpty(n.Name)) _names.Add(n.Name);
            foreach (var o in n.Output) _names.Add(o);
            foreach (var i in n.Input) _names.Add(i);
        }
    }

    /// <summary>The graph being edited.</summary>
    public GraphProto Graph { get; }

    /// <summary>Returns a name not yet used in the graph, based on <paramref name="hint"/>, and reserves it.</summary>
    public string UniqueName(string hint)
    {
        if (_names.Add(hint)) return hint;
        _counters.TryGetValue(hint, out var k);
        string candidate;
        do { candidate = $"{hint}_{++k}"; } while (!_names.Add(candidate));
        _counters[hint] = k;
        return candidate;
    }

    /// <summary>Reserves an exact name; throws if it is taken.</summary>
    public string Reserve(string name) =>
        _names.Add(name) ? name : throw new OnnxTuneException($"The name '{name}' is already used in graph '{Graph.Name}'.");

    /// <summary>True when the name is in use.</summary>
    public bool IsUsed(string name) => _names.Contains(name);

    /// <summary>Adds a node with one new output named from <paramref name="outputHint"/>; returns the output name.</summary>
    public string Add(string opType, IEnumerable<string> inputs, string outputHint, params AttributeProto[] attributes) =>
        AddNode(opType, inputs, [UniqueName(outputHint)], attributes).Output[0];

    /// <summary>
    /// Adds a node with the given outputs (unique in the graph, typically from <see cref="UniqueName"/> or
    /// <see cref="Reserve"/>); the outputs and the node's generated name are marked as used.
    /// </summary>
    public NodeProto AddNode(string opType, IEnumerable<string> inputs, IEnumerable<string> outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        foreach (var o in node.Output)
        {
            // Optional outputs left out are empty strings, which are not names.
            if (o.Length > 0) _names.Add(o);
        }
        node.Name = UniqueName($"{opType}_{(node.Output.Count > 0 ? node.Output[0] : "node")}");
        Graph.Node.Add(node);
        return node;
    }

    /// <summary>Adds an initializer (its name is reserved as given, or made unique when <paramref name="makeUnique"/>).</summary>
    public string AddInitializer(TensorProto tensor, bool makeUnique = true)
    {
        tensor.Name = makeUnique ? UniqueName(tensor.Name) : Reserve(tensor.Name);
        Graph.Initializer.Add(tensor);
        return tensor.Name;
    }

    /// <summary>A float32 scalar or 1-D constant as an initializer.</summary>
    public string ConstantFloat(string hint, float value) => AddInitializer(TensorProtos.Float(hint, [value]));

    /// <summary>An int64 1-D constant as an initializer.</summary>
    public string ConstantInt64s(string hint, params long[] values) =>
        AddInitializer(TensorProtos.Int64(hint, values, values.Length));

    /// <summary>Adds a graph input and marks its name as used (it may already be reserved by the caller).</summary>
    public void AddInput(ValueInfoProto input)
    {
        ArgumentNullException.ThrowIfNull(input);
        _names.Add(input.Name);
        Graph.Input.Add(input);
    }

    /// <summary>Adds a graph output and marks its name as used (it may already be produced or reserved by the caller).</summary>
    public void AddOutput(ValueInfoProto output)
    {
        ArgumentNullException.ThrowIfNull(output);
        _names.Add(output.Name);
        Graph.Output.Add(output);
    }
}

/// <summary>Builds <see cref="ValueInfoProto"/> with symbolic or fixed dims.</summary>
public static class ValueInfos
{
    /// <summary>A tensor value info. A dim is a long (fixed), a string (symbolic) or null (unknown).</summary>
    public static ValueInfoProto Tensor(string name, DataType type, params object?[]? dims)
    {
        var tt = new TypeProto.Types.Tensor { ElemType = (int)type };
        if (dims is not null)
        {
            tt.Shape = new TensorShapeProto();
            foreach (var d in dims)
            {
                var dim = new TensorShapeProto.Types.Dimension();
                switch (d)
                {
                    case long l: dim.DimValue = l; break;
                    case int i: dim.DimValue = i; break;
                    case string s: dim.DimParam = s; break;
                }
                tt.Shape.Dim.Add(dim);
            }
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tt } };
    }

    /// <summary>Element type of a value info (Undefined when not a tensor).</summary>
    public static DataType ElemType(ValueInfoProto v) =>
        v.Type?.TensorType is { } t ? (DataType)t.ElemType : DataType.Undefined;

    /// <summary>Dims of a value info: a long for fixed, null for symbolic or unknown; null array when the rank is unknown.</summary>
    public static long?[]? Dims(ValueInfoProto v)
    {
        var shape = v.Type?.TensorType?.Shape;
        if (shape is null) return null;
        return shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : (long?)null).ToArray();
    }
}
