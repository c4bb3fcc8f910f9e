using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Autodiff.Gradients;

/// <summary>Result of <see cref="BackwardGraphBuilder.Build"/>.</summary>
/// <param name="Gradients">Gradient tensor name per requested parameter (same order as requested).</param>
/// <param name="UnusedParameters">Requested parameters the loss does not depend on (their gradient is zeros).</param>
/// <param name="RequiredOpset">Default-domain opset the backward nodes need; raise the model's opset import to it when higher.</param>
public sealed record BackwardGraphResult(IReadOnlyList<string> Gradients, IReadOnlyList<string> UnusedParameters, long RequiredOpset = 0);

/// <summary>
/// Appends the backward pass of a scalar loss to a graph, in standard ONNX ops. The walker does the shared work once
/// (tinygrad's lesson): it prunes what needs no gradient (frozen parameters, integer and shape-only paths, nodes
/// the loss does not depend on), walks nodes in reverse topological order, sums gradients arriving along several
/// paths, reduces broadcast gradients back to input shapes, and fails with the op type and node name when a needed
/// rule is missing.
/// </summary>
public sealed class BackwardGraphBuilder
{
    private readonly GradientRuleRegistry _registry;

    /// <summary>Creates a builder over a rule registry (default: <see cref="GradientRuleRegistry.Default"/>).</summary>
    public BackwardGraphBuilder(GradientRuleRegistry? registry = null) => _registry = registry ?? GradientRuleRegistry.Default;

    /// <summary>
    /// Adds to <paramref name="editor"/>'s graph the nodes computing d<paramref name="loss"/>/d<c>p</c> for each
    /// <paramref name="parameters"/> entry. The gradients are not added as graph outputs.
    /// </summary>
    public BackwardGraphResult Build(GraphEditor editor, string loss, IReadOnlyList<string> parameters, long opset)
    {
        ArgumentNullException.ThrowIfNull(editor);
        ArgumentException.ThrowIfNullOrEmpty(loss);
        var graph = editor.Graph;
        var forward = TopologicalOrder.Sort(graph);
        var constants = new ConstantTable(graph);
        var types = TensorTypeInference.Run(graph, forward, constants);
        var state = new BackwardGraphState(editor, types, constants, opset);

        // 1. Which tensors carry a gradient from the parameters (forward reachability through differentiable edges).
        var requires = new HashSet<string>(parameters, StringComparer.Ordinal);
        foreach (var node in forward)
        {
            if (!node.Input.Any(requires.Contains)) continue;
            if (_registry.IsNonDifferentiable(node.Domain, node.OpType)) continue;
            foreach (var o in node.Output)
            {
                if (o.Length == 0) continue;
                var elem = types.TryGetValue(o, out var t) ? t.ElementType : TensorProto.Types.DataType.Undefined;
                if (elem == TensorProto.Types.DataType.Undefined || TensorProtos.IsFloating(elem)) requires.Add(o);
            }
        }

        // 2. Which nodes the loss depends on.
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in forward) foreach (var o in n.Output) if (o.Length > 0) producer[o] = n;
        var needed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<string>([loss]);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (stack.Count > 0)
        {
            var t = stack.Pop();
            if (!seen.Add(t) || !producer.TryGetValue(t, out var n)) continue;
            if (needed.Add(n)) foreach (var i in n.Input) if (i.Length > 0) stack.Push(i);
        }
        if (!requires.Contains(loss))
            throw new OnnxTuneException($"The loss '{loss}' does not depend on any trainable parameter ({string.Join(", ", parameters.Take(5))}{(parameters.Count > 5 ? ", ..." : "")}): nothing to train.");

        // 3. Reverse walk.
        var contributions = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        void Contribute(string tensor, string grad)
        {
            if (!contributions.TryGetValue(tensor, out var list)) contributions[tensor] = list = [];
            list.Add(grad);
        }
        string? Total(string tensor)
        {
            if (!contributions.TryGetValue(tensor, out var list) || list.Count == 0) return null;
            if (list.Count == 1) return list[0];
            // Pairwise Adds, not one variadic Sum: ONNX Runtime's Sum kernel took twice as long as Add for two inputs.
            var sum = list[0];
            for (var i = 1; i < list.Count; i++)
            {
                var next = editor.UniqueName(tensor + "_grad_sum");
                editor.AddNode("Add", [sum, list[i]], [next]);
                sum = next;
            }
            list.Clear();
            list.Add(sum);
            return sum;
        }

        var seed = editor.UniqueName(loss + "_grad_seed");
        editor.AddNode("ConstantOfShape", [state.ShapeOf(loss)], [seed],
            Attr.Tensor("value", types.TryGetValue(loss, out var lt) && lt.ElementType == TensorProto.Types.DataType.Double
                ? TensorProtos.Double("one", [1.0], 1) : TensorProtos.Float("one", [1f], 1)));
        Contribute(loss, seed);

        for (var k = forward.Count - 1; k >= 0; k--)
        {
            var node = forward[k];
            if (!needed.Contains(node) || _registry.IsNonDifferentiable(node.Domain, node.OpType)) continue;
            var required = node.Input.Select(i => i.Length > 0 && requires.Contains(i)).ToArray();
            if (!required.Any(r => r)) continue;
            var gradOutputs = node.Output.Select(o => o.Length > 0 ? Total(o) : null).ToArray();
            if (gradOutputs.All(g => g is null)) continue;

            var rule = _registry.Find(node.Domain, node.OpType, opset)
                ?? throw new GradientNotDefinedException(node.OpType, node.Name,
                    $"No gradient rule for {node.Describe()}: a trainable parameter's gradient flows through it " +
                    $"(input '{node.Input.First(i => i.Length > 0 && requires.Contains(i))}'). Freeze the parameters before this node, or register an IGradientRule for '{node.OpType}'.");
            var ctx = new GradientContext(state, node, gradOutputs, required);
            IReadOnlyList<string?> inputGrads;
            try
            {
                inputGrads = rule.Build(ctx);
            }
            catch (OnnxTuneException) { throw; }
            catch (Exception e)
            {
                throw new OnnxTuneException($"The gradient rule for {node.Describe()} failed: {e.Message}", e);
            }
            if (inputGrads.Skip(node.Input.Count).Any(g => g is not null))
                throw new OnnxTuneException($"The gradient rule for {node.OpType} returned {inputGrads.Count} gradients for {node.Input.Count} inputs ({node.Describe()}).");
            for (var i = 0; i < Math.Min(inputGrads.Count, node.Input.Count); i++)
            {
                if (inputGrads[i] is not { } g || !required[i]) continue;
                if (rule.Broadcasts) g = ctx.SumToShapeOf(g, node.Input[i], gradShapeLike: node.Output[0]);
                Contribute(node.Input[i], g);
            }
        }

        var grads = new List<string>(parameters.Count);
        var unused = new List<string>();
        foreach (var p in parameters)
        {
            var g = Total(p);
            if (g is null)
            {
                unused.Add(p);
                g = editor.UniqueName(p + "_zero_grad");
                editor.AddNode("Mul", [p, state.Scalar(0f, types.TryGetValue(p, out var pt) ? pt.ElementType : TensorProto.Types.DataType.Float)], [g]);
            }
            grads.Add(g);
        }
        return new BackwardGraphResult(grads, unused, state.RequiredOpset);
    }
}

/// <summary>Iterative (Kahn) topological ordering of a graph's nodes; never recursive.</summary>
public static class TopologicalOrder
{
    /// <summary>Nodes in an order where every node follows the producers of its inputs.</summary>
    /// <exception cref="OnnxTuneException">The graph has a cycle or reads a tensor nobody produces.</exception>
    public static List<NodeProto> Sort(GraphProto graph)
    {
        var available = new HashSet<string>(StringComparer.Ordinal) { "" };
        foreach (var i in graph.Input) available.Add(i.Name);
        foreach (var t in graph.Initializer) available.Add(t.Name);
        var producerIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var n = 0; n < graph.Node.Count; n++)
            foreach (var o in graph.Node[n].Output) if (o.Length > 0) producerIndex[o] = n;

        var pending = new int[graph.Node.Count];
        var consumers = new List<int>[graph.Node.Count];
        for (var n = 0; n < graph.Node.Count; n++)
        {
            consumers[n] = [];
            foreach (var i in graph.Node[n].Input.Distinct())
            {
                if (available.Contains(i)) continue;
                if (!producerIndex.ContainsKey(i))
                    throw new OnnxModelFormatException($"{graph.Node[n].Describe()} reads '{i}', which is not a graph input, an initializer or any node's output.");
            }
        }
        for (var n = 0; n < graph.Node.Count; n++)
            foreach (var i in graph.Node[n].Input.Distinct())
                if (!available.Contains(i) && producerIndex.TryGetValue(i, out var p))
                {
                    pending[n]++;
                    consumers[p].Add(n);
                }
        var queue = new Queue<int>();
        for (var n = 0; n < graph.Node.Count; n++) if (pending[n] == 0) queue.Enqueue(n);
        var order = new List<NodeProto>(graph.Node.Count);
        while (queue.Count > 0)
        {
            var n = queue.Dequeue();
            order.Add(graph.Node[n]);
            foreach (var c in consumers[n]) if (--pending[c] == 0) queue.Enqueue(c);
        }
        if (order.Count != graph.Node.Count)
            throw new OnnxModelFormatException($"Graph '{graph.Name}' has a cycle: {graph.Node.Count - order.Count} nodes can never run.");
        return order;
    }
}
