using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Autodiff.Transforms;

/// <summary>
/// Replaces LayerNorm written out in element-wise ops, as exporters before opset 17 write it (PyTorch's
/// <c>ReduceMean → Sub → Pow(·, 2) → ReduceMean → Add(ε) → Sqrt → Div → Mul(γ) → Add(β)</c>), with one
/// opset-17 <c>LayerNormalization</c> node in the graph that is differentiated. The forward pass then runs one
/// kernel instead of nine, and the backward is the LayerNormalization rule's (statistics from the forward node)
/// instead of the gradients of every step of the chain.
/// </summary>
/// <remarks>
/// <para>A chain is fused only when it normalises the last axis (<c>axes = [-1]</c>, <c>keepdims = 1</c>), ε is a
/// constant scalar, γ (and β, when present) are 1-D float32 or float64 initializers, and every intermediate tensor
/// feeds only the next step of the chain (none is a graph output or read elsewhere).
/// <c>Mul(d, d)</c> for the square and <c>Mul(d, Reciprocal(s))</c> for the division are recognised too; operand order
/// of the commutative steps does not matter.</para>
/// <para>The model's default-domain opset is raised to 17 when it is older; the other operators keep their meaning
/// between 13 and 17 (the training graph builder raises it to 16 for its own rules on the same grounds). Models
/// with RoiAlign below opset 16 (whose default coordinate mode changed) are left alone. The inference model users
/// export is never rewritten: trained γ and β keep their names and fit the original graph.</para>
/// </remarks>
internal static class LayerNormFusion
{
    internal const long LayerNormOpset = 17;

    /// <summary>
    /// Returns a copy with every recognised chain fused, or <paramref name="model"/> itself when there is none. A
    /// chain whose ε or exponent is in <paramref name="keep"/> (selected to train) is left as it is.
    /// </summary>
    public static ModelProto Apply(ModelProto model, IReadOnlySet<string>? keep = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var matches = Fusable(model);
        if (keep is not null) matches.RemoveAll(m => m.Constants.Any(keep.Contains));
        if (matches.Count == 0) return model;
        var v = OpsetUpgrade.DefaultOpset(model)!.Value;

        var result = model.Clone();
        var g = result.Graph;
        var remove = matches.SelectMany(m => m.Nodes).Select(n => n.Output[0]).ToHashSet(StringComparer.Ordinal);
        var byFirstNode = matches.ToDictionary(m => m.Nodes[0].Output[0], StringComparer.Ordinal);
        var nodes = g.Node.ToList();
        g.Node.Clear();
        foreach (var n in nodes)
        {
            if (n.Output.Count == 1 && byFirstNode.TryGetValue(n.Output[0], out var m))
            {
                // The fused node sits where the chain began: its input and parameters exist there already.
                var ln = new NodeProto { OpType = "LayerNormalization", Name = string.IsNullOrEmpty(m.Nodes[^1].Name) ? "" : m.Nodes[^1].Name + "_fused" };
                ln.Input.Add(m.X);
                ln.Input.Add(m.Scale);
                if (m.Bias is not null) ln.Input.Add(m.Bias);
                ln.Output.Add(m.Output);
                ln.Attribute.Add(Attr.Int("axis", -1));
                ln.Attribute.Add(Attr.Float("epsilon", m.Epsilon));
                g.Node.Add(ln);
                continue;
            }
            if (n.Output.Count == 1 && remove.Contains(n.Output[0])) continue;
            g.Node.Add(n);
        }
        // The chains' own constants (ε, the exponent) are read by nothing now; ONNX Runtime would warn about each.
        var read = g.Node.SelectMany(n => n.Input).Concat(g.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
        var constants = matches.SelectMany(m => m.Nodes).SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        foreach (var t in g.Initializer.Where(t => constants.Contains(t.Name) && !read.Contains(t.Name)).ToList())
        {
            g.Initializer.Remove(t);
            if (g.Input.FirstOrDefault(i => i.Name == t.Name) is { } input) g.Input.Remove(input);
        }
        foreach (var c in g.Node.Where(n => n.OpType == "Constant" && n.Output.Count == 1 && constants.Contains(n.Output[0]) && !read.Contains(n.Output[0])).ToList())
            g.Node.Remove(c);
        // Shape annotations of removed intermediates would describe tensors that no longer exist.
        var gone = remove.Where(r => !matches.Any(m => m.Output == r)).ToHashSet(StringComparer.Ordinal);
        foreach (var vi in g.ValueInfo.Where(x => gone.Contains(x.Name)).ToList()) g.ValueInfo.Remove(vi);
        if (v < LayerNormOpset)
            foreach (var import in result.OpsetImport.Where(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx"))
                import.Version = LayerNormOpset;
        return result;
    }

    /// <summary>The initializers the fusable chains hold as constants (ε, the exponent 2).</summary>
    public static IEnumerable<string> Constants(ModelProto model) => Fusable(model).SelectMany(m => m.Constants);

    private static List<Match> Fusable(ModelProto model)
    {
        var opset = OpsetUpgrade.DefaultOpset(model);
        if (opset is not { } v || v < 13) return [];
        if (v < 16 && model.Graph.Node.Any(n => n.OpType == "RoiAlign")) return [];
        return Find(model.Graph, v);
    }

    /// <summary>One recognised chain; <paramref name="Constants"/> are the initializers among ε and the exponent.</summary>
    internal sealed record Match(IReadOnlyList<NodeProto> Nodes, string X, string Scale, string? Bias, float Epsilon, string Output, IReadOnlyList<string> Constants);

    internal static List<Match> Find(GraphProto g, long opset)
    {
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        var readers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        foreach (var n in g.Node)
        {
            foreach (var o in n.Output) if (o.Length > 0) producer[o] = n;
            foreach (var i in n.Input.Distinct())
                if (i.Length > 0) (readers.TryGetValue(i, out var list) ? list : readers[i] = []).Add(n);
        }
        var graphOutputs = g.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var inits = g.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var claimed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var found = new List<Match>();

        // A graph output counts as a reader that is not part of any chain.
        IReadOnlyList<NodeProto?> Readers(string t)
        {
            IReadOnlyList<NodeProto?> nodes = readers.TryGetValue(t, out var r) ? r : [];
            return graphOutputs.Contains(t) ? [null, .. nodes] : nodes;
        }
        NodeProto? Single(string tensor, string op) =>
            // The one node reading tensor (which is no graph output), when it has the op type (in the default domain).
            Readers(tensor) is [{ } h] && h.OpType == op && string.IsNullOrEmpty(h.Domain) && h.Output.Count == 1 ? h : null;
        static bool Floating(TensorProto t) => t.DataType is (int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Double;
        double[]? Floats(string tensor)
        {
            if (inits.TryGetValue(tensor, out var t)) return Floating(t) ? TensorProtos.ToDoubleArray(t) : null;
            if (producer.TryGetValue(tensor, out var c) && c.OpType == "Constant" && c.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } ct && Floating(ct))
                return TensorProtos.ToDoubleArray(ct);
            return null;
        }
        bool LastAxisMean(NodeProto n)
        {
            if (n.OpType != "ReduceMean" || !string.IsNullOrEmpty(n.Domain) || n.GetInt("keepdims", 1) != 1) return false;
            long[]? axes = opset >= 18
                ? n.Input.Count > 1 && inits.TryGetValue(n.Input[1], out var a) ? TensorProtos.ToInt64Array(a) : null
                : n.GetInts("axes");
            return axes is [-1];
        }
        // Pow(d, 2) or Mul(d, d).
        bool IsSquare(NodeProto? n, string d) => n is not null && string.IsNullOrEmpty(n.Domain) && n.Output.Count == 1 && n.Input.Count == 2 && n.Input[0] == d
            && (n.OpType == "Pow" ? Floats(n.Input[1]) is [2.0] : n.OpType == "Mul" && n.Input[1] == d);
        string? Other(NodeProto n, string known) =>
            n.Input.Count == 2 && n.Input[0] == known ? n.Input[1] : n.Input.Count == 2 && n.Input[1] == known ? n.Input[0] : null;
        long? Size1D(string name) => inits.TryGetValue(name, out var t) && t.Dims.Count == 1 && Floating(t) ? t.Dims[0] : null;

        foreach (var mean in g.Node)
        {
            if (!LastAxisMean(mean) || claimed.Contains(mean)) continue;
            var x = mean.Input[0];
            var m = mean.Output[0];
            if (Single(m, "Sub") is not { } sub || sub.Input[0] != x || sub.Input[1] != m) continue;
            var d = sub.Output[0];
            // d feeds the square and the division only.
            if (Readers(d) is not [var first, var second]) continue;
            var (square, divider) = IsSquare(first, d) ? (first, second) : IsSquare(second, d) ? (second, first) : (null, null);
            if (square is null || divider is null) continue;
            if (Single(square.Output[0], "ReduceMean") is not { } variance || !LastAxisMean(variance)) continue;
            if (Single(variance.Output[0], "Add") is not { } addEps) continue;
            if (Other(addEps, variance.Output[0]) is not { } epsName || Floats(epsName) is not [var eps] || !(eps > 0)) continue;
            if (Single(addEps.Output[0], "Sqrt") is not { } sqrt) continue;
            var s = sqrt.Output[0];
            if (Readers(s) is not [{ } sqrtReader]) continue;
            var chain = new List<NodeProto> { mean, sub, square, variance, addEps, sqrt };
            string normalized;
            if (sqrtReader is { OpType: "Div" } div && div == divider && div.Input[0] == d && div.Input[1] == s && string.IsNullOrEmpty(div.Domain))
            {
                chain.Add(div);
                normalized = div.Output[0];
            }
            else if (sqrtReader is { OpType: "Reciprocal" } rec && Single(rec.Output[0], "Mul") is { } mulRec && mulRec == divider && Other(mulRec, rec.Output[0]) == d)
            {
                chain.Add(rec);
                chain.Add(mulRec);
                normalized = mulRec.Output[0];
            }
            else continue;
            if (Single(normalized, "Mul") is not { } scaleMul || Other(scaleMul, normalized) is not { } scale || Size1D(scale) is not { } h) continue;
            chain.Add(scaleMul);
            var output = scaleMul.Output[0];
            string? bias = null;
            if (Single(output, "Add") is { } biasAdd && Other(biasAdd, output) is { } b && Size1D(b) == h)
            {
                chain.Add(biasAdd);
                bias = b;
                output = biasAdd.Output[0];
            }
            if (chain.Any(claimed.Contains) || chain.Any(n => !string.IsNullOrEmpty(n.Domain))) continue;
            foreach (var n in chain) claimed.Add(n);
            string[] constants = square.OpType == "Pow" ? [square.Input[1], epsName] : [epsName];
            found.Add(new Match(chain, x, scale, bias, (float)eps, output, constants.Where(inits.ContainsKey).Distinct().ToArray()));
        }
        return found;
    }
}
