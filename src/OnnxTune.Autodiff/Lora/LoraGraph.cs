using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Lora;

/// <summary>A model with LoRA branches and what was added.</summary>
/// <param name="Model">The model with <c>W.lora_A</c>/<c>W.lora_B</c> initializers and the adapter branches.</param>
/// <param name="Manifest">The adapted weights, their tensors and branches.</param>
public sealed record LoraModel(ModelProto Model, LoraManifest Manifest);

/// <summary>
/// Adds LoRA branches to a model's MatMul/Gemm weights (<see cref="Augment"/>), folds trained adapters back into the
/// weights (<see cref="Merge"/>) and makes the adapter-ready base model ONNX Runtime's LoRA API serves
/// (<see cref="ToAdapterBase"/>). Only standard ONNX operators are added.
/// </summary>
public static class LoraGraph
{
    /// <summary>Suffix of the down projection <c>[r, in]</c>.</summary>
    public const string ASuffix = ".lora_A";

    /// <summary>Suffix of the up projection <c>[out, r]</c>.</summary>
    public const string BSuffix = ".lora_B";

    private const string DropoutModeMarker = ".lora_dropout.training_mode";

    /// <summary>
    /// The target weights in graph order: every float initializer matching a glob of <see cref="LoraOptions.Targets"/>
    /// plus <see cref="LoraOptions.TargetNames"/>.
    /// </summary>
    /// <exception cref="LoraException">A glob matches no initializer, or a name is not a float initializer.</exception>
    public static IReadOnlyList<string> ResolveTargets(ModelProto model, LoraOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var candidates = model.Graph.Initializer.Where(t => TensorProtos.IsFloating((DataType)t.DataType)).Select(t => t.Name).ToList();
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var glob in options.Targets)
        {
            var regex = ParameterGlob.ToRegex(glob);
            var hits = candidates.Where(c => regex.IsMatch(c)).ToList();
            if (hits.Count == 0)
                throw new LoraException($"--lora '{glob}' matches no float initializer of the model (some names: {string.Join(", ", candidates.Take(8))}{(candidates.Count > 8 ? ", ..." : "")}).");
            set.UnionWith(hits);
        }
        foreach (var name in options.TargetNames)
        {
            if (!candidates.Contains(name))
                throw new LoraException($"LoRA target '{name}' is not a float initializer of the model.");
            set.Add(name);
        }
        return candidates.Where(set.Contains).ToList();
    }

    /// <summary>
    /// Adds an adapter to every target weight. The model is not modified. With <paramref name="training"/> and a
    /// dropout above 0 the branch input goes through a <c>Dropout</c> in training mode; otherwise there is none.
    /// </summary>
    /// <exception cref="LoraException">A setting is out of range, a glob matches nothing, or a target is not the weight (input B) of MatMul/Gemm nodes only.</exception>
    public static LoraModel Augment(ModelProto model, LoraOptions options, bool training)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        // The adapter Dropout is the opset-12+ form; an opset-11/12 model is upgraded to 13 first.
        model = Transforms.OpsetUpgrade.ApplyIfUpgradable(model);
        var targets = ResolveTargets(model, options);
        var result = model.Clone();
        var g = result.Graph;
        var editor = new GraphEditor(g);
        var initializers = g.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var consumers = new Dictionary<string, List<(NodeProto Node, int Index)>>(StringComparer.Ordinal);
        foreach (var n in g.Node)
            for (var i = 0; i < n.Input.Count; i++)
            {
                if (!consumers.TryGetValue(n.Input[i], out var list)) consumers[n.Input[i]] = list = [];
                list.Add((n, i));
            }
        var inSubgraphs = SubgraphInputs(g);
        var graphOutputs = g.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var branchesAfter = new Dictionary<NodeProto, List<NodeProto>>();
        var weights = new List<LoraWeight>();
        var scale = options.Scale;

        foreach (var w in targets)
        {
            var t = initializers[w];
            var type = (DataType)t.DataType;
            if (type is not (DataType.Float or DataType.Double))
                throw new LoraException($"LoRA target '{w}' is {type}; adapters are float or double like the weight they adapt.");
            if (t.Dims.Count != 2)
                throw new LoraException($"LoRA target '{w}' has shape [{string.Join(",", t.Dims)}]; LoRA adapts 2-D MatMul/Gemm weights.");
            if (graphOutputs.Contains(w) || inSubgraphs.Contains(w))
                throw new LoraException($"LoRA target '{w}' is {(graphOutputs.Contains(w) ? "a graph output" : "read inside a subgraph")}; LoRA adapts weights read only as input B of MatMul/Gemm nodes.");
            var uses = consumers.TryGetValue(w, out var u) ? u : [];
            if (uses.Count == 0)
                throw new LoraException($"LoRA target '{w}' is read by no node.");
            bool? outIn = null;
            float? gemmAlpha = null;
            foreach (var (node, index) in uses)
            {
                var isMatMul = node.OpType == "MatMul" && string.IsNullOrEmpty(node.Domain);
                var isGemm = node.OpType == "Gemm" && string.IsNullOrEmpty(node.Domain);
                if (!(isMatMul || isGemm) || index != 1)
                    throw new LoraException($"LoRA target '{w}' is input {index} of {node.Describe()}; LoRA adapts tensors read only as the weight (input B) of MatMul and Gemm nodes.");
                var thisOutIn = isGemm && node.GetInt("transB", 0) != 0;
                var thisAlpha = isGemm ? node.GetFloat("alpha", 1f) : 1f;
                if ((outIn is { } o && o != thisOutIn) || (gemmAlpha is { } a && a != thisAlpha))
                    throw new LoraException($"LoRA target '{w}' is read by nodes with different layouts or Gemm alphas ({node.Describe()} among them); one adapter cannot be folded back into both.");
                if (thisAlpha == 0f)
                    throw new LoraException($"LoRA target '{w}' feeds {node.Describe()} with alpha 0; the weight does not contribute.");
                outIn = thisOutIn;
                gemmAlpha = thisAlpha;
            }
            long inF = outIn!.Value ? t.Dims[1] : t.Dims[0];
            long outF = outIn.Value ? t.Dims[0] : t.Dims[1];
            var aName = ReserveTensor(editor, w + ASuffix, w);
            var bName = ReserveTensor(editor, w + BSuffix, w);
            var aValues = LoraInitializer.KaimingUniform(options.Seed, aName, options.Rank, inF);
            var bCount = checked((int)(outF * options.Rank));
            g.Initializer.Add(type == DataType.Double
                ? TensorProtos.Double(aName, aValues.Select(v => (double)v).ToArray(), options.Rank, inF)
                : TensorProtos.Float(aName, aValues, options.Rank, inF));
            g.Initializer.Add(type == DataType.Double
                ? TensorProtos.Double(bName, new double[bCount], outF, options.Rank)
                : TensorProtos.Float(bName, new float[bCount], outF, options.Rank));

            var branches = new List<LoraBranch>();
            foreach (var (node, _) in uses)
            {
                var added = new List<NodeProto>();
                NodeProto Add(string op, IEnumerable<string> inputs, string outputHint, params AttributeProto[] attributes)
                {
                    var n = editor.AddNode(op, inputs, [editor.UniqueName(outputHint)], attributes);
                    g.Node.RemoveAt(g.Node.Count - 1); // placed right after the base node below
                    added.Add(n);
                    return n;
                }
                string Constant(string hint, TensorProto value) => Add("Constant", [], hint, Attr.Tensor("value", value)).Output[0];

                var y = node.Output[0];
                var x = node.Input[0];
                var baseOutput = editor.UniqueName(y + ".lora_base");
                if (node.OpType == "Gemm" && node.GetInt("transA", 0) != 0)
                    x = Add("Transpose", [x], w + ".lora_input", Attr.Ints("perm", 1, 0)).Output[0];
                if (training && options.Dropout > 0)
                {
                    var ratio = Constant(w + ".lora_dropout.ratio", TensorProtos.Float("ratio", [(float)options.Dropout]));
                    var mode = Constant(w + DropoutModeMarker, TensorProtos.Bool("training_mode", [true]));
                    x = Add("Dropout", [x, ratio, mode], w + ".lora_dropout").Output[0];
                }
                var aT = Add("Transpose", [aName], aName + ".T", Attr.Ints("perm", 1, 0)).Output[0];
                var h = Add("MatMul", [x, aT], w + ".lora_down").Output[0];
                var bT = Add("Transpose", [bName], bName + ".T", Attr.Ints("perm", 1, 0)).Output[0];
                var up = Add("MatMul", [h, bT], w + ".lora_up").Output[0];
                var s = Constant(w + ".lora_scale", type == DataType.Double ? TensorProtos.Double("scale", [scale]) : TensorProtos.Float("scale", [(float)scale]));
                var scaled = Add("Mul", [up, s], w + ".lora_delta").Output[0];
                node.Output[0] = baseOutput;
                var sum = editor.AddNode("Add", [baseOutput, scaled], [y]);
                g.Node.RemoveAt(g.Node.Count - 1);
                added.Add(sum);
                branchesAfter[node] = added;
                branches.Add(new LoraBranch { Output = y, BaseOutput = baseOutput, Nodes = added.Select(n => n.Name).ToList() });
            }
            weights.Add(new LoraWeight
            {
                Weight = w, A = aName, B = bName, In = inF, Out = outF, OutIn = outIn.Value,
                MergeFactor = scale / gemmAlpha!.Value, Branches = branches,
            });
        }

        // Keep the node list topologically sorted: each branch goes right after the node it adapts.
        var ordered = new List<NodeProto>(g.Node.Count + branchesAfter.Values.Sum(b => b.Count));
        foreach (var n in g.Node)
        {
            ordered.Add(n);
            if (branchesAfter.TryGetValue(n, out var b)) ordered.AddRange(b);
        }
        g.Node.Clear();
        g.Node.AddRange(ordered);
        var manifest = new LoraManifest
        {
            Rank = options.Rank, Alpha = options.Alpha ?? 2.0 * options.Rank, Scale = scale, Dropout = options.Dropout, Seed = options.Seed,
            Weights = weights,
        };
        return new LoraModel(result, manifest);
    }

    /// <summary>
    /// Folds every adapter into its weight (<c>W += scale·(B·A)</c> in W's own layout, divided by a Gemm's alpha) and
    /// removes the branches and adapter tensors: a plain model of the original graph. The model is not modified.
    /// </summary>
    /// <exception cref="LoraException">The model does not hold the adapters and branches <paramref name="lora"/> lists.</exception>
    public static ModelProto Merge(ModelProto adapted, LoraManifest lora)
    {
        ArgumentNullException.ThrowIfNull(adapted);
        ArgumentNullException.ThrowIfNull(lora);
        var m = adapted.Clone();
        var g = m.Graph;
        foreach (var w in lora.Weights)
        {
            var wIndex = IndexOf(g, w.Weight);
            var wt = g.Initializer[wIndex];
            var a = TensorProtos.ToDoubleArray(Initializer(g, w.A));
            var b = TensorProtos.ToDoubleArray(Initializer(g, w.B));
            var values = TensorProtos.ToDoubleArray(wt);
            long r = lora.Rank, inF = w.In, outF = w.Out;
            if (a.Length != r * inF || b.Length != outF * r || values.Length != inF * outF)
                throw new LoraException($"LoRA tensors of '{w.Weight}' do not have the recorded shapes ([{r},{inF}], [{outF},{r}], weight {inF}x{outF}).");
            for (long o = 0; o < outF; o++)
                for (long i = 0; i < inF; i++)
                {
                    double delta = 0;
                    for (long k = 0; k < r; k++) delta += b[o * r + k] * a[k * inF + i];
                    values[w.OutIn ? o * inF + i : i * outF + o] += w.MergeFactor * delta;
                }
            var dims = wt.Dims.ToArray();
            g.Initializer[wIndex] = (DataType)wt.DataType == DataType.Double
                ? TensorProtos.Double(w.Weight, values, dims)
                : TensorProtos.Float(w.Weight, values.Select(v => (float)v).ToArray(), dims);
            RemoveBranches(g, w);
        }
        return m;
    }

    /// <summary>
    /// The adapter-ready base for ONNX Runtime's LoRA API (<c>OrtLoraAdapter</c>, <c>RunOptions.AddActiveLoraAdapter</c>):
    /// every tensor in <paramref name="overridable"/> becomes a graph input whose initializer is its default, with
    /// the LoRA tensors' defaults zero, so the base alone computes the untuned model. The model is not modified.
    /// </summary>
    /// <param name="adapted">A model with adapters (<see cref="Augment"/>), or any model when <paramref name="lora"/> is null.</param>
    /// <param name="lora">Its adapters (null: none).</param>
    /// <param name="overridable">Tensors an adapter may set (the LoRA tensors and any other trained tensor).</param>
    public static ModelProto ToAdapterBase(ModelProto adapted, LoraManifest? lora, IEnumerable<string> overridable)
    {
        ArgumentNullException.ThrowIfNull(adapted);
        ArgumentNullException.ThrowIfNull(overridable);
        var m = adapted.Clone();
        var g = m.Graph;
        var zero = (lora?.TensorNames ?? []).ToHashSet(StringComparer.Ordinal);
        var names = overridable.Concat(zero).Distinct(StringComparer.Ordinal).ToList();
        var inputs = g.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var index = IndexOf(g, name);
            var t = g.Initializer[index];
            if (zero.Contains(name))
            {
                var count = checked((int)TensorProtos.ElementCount(t));
                g.Initializer[index] = (DataType)t.DataType == DataType.Double
                    ? TensorProtos.Double(name, new double[count], t.Dims.ToArray())
                    : TensorProtos.Float(name, new float[count], t.Dims.ToArray());
            }
            if (!inputs.Contains(name))
                g.Input.Add(ValueInfos.Tensor(name, (DataType)t.DataType, t.Dims.Select(d => (object?)d).ToArray()));
        }
        // Graph inputs with initializer defaults need IR version 4 or newer.
        if (m.IrVersion < 4) m.IrVersion = 4;
        return m;
    }

    /// <summary>Sets the training_mode of the adapter Dropout nodes (eval graphs run them as the identity); returns how many.</summary>
    internal static int SetDropoutTraining(ModelProto model, bool training)
    {
        var changed = 0;
        foreach (var n in model.Graph.Node)
        {
            if (n.OpType != "Constant" || n.Output.Count != 1 || !n.Output[0].Contains(DropoutModeMarker, StringComparison.Ordinal)) continue;
            n.Find("value")!.T = TensorProtos.Bool("training_mode", [training]);
            changed++;
        }
        return changed;
    }

    private static string ReserveTensor(GraphEditor editor, string name, string weight)
    {
        if (editor.IsUsed(name))
            throw new LoraException($"Cannot adapt '{weight}': the model already uses the name '{name}'.");
        return editor.Reserve(name);
    }

    private static void RemoveBranches(GraphProto g, LoraWeight w)
    {
        foreach (var branch in w.Branches)
        {
            var nodes = branch.Nodes.ToHashSet(StringComparer.Ordinal);
            var removed = 0;
            for (var i = g.Node.Count - 1; i >= 0; i--)
                if (nodes.Contains(g.Node[i].Name)) { g.Node.RemoveAt(i); removed++; }
            if (removed != nodes.Count)
                throw new LoraException($"The model lacks {nodes.Count - removed} node(s) of the LoRA branch of '{w.Weight}' (output '{branch.Output}').");
            var producer = g.Node.FirstOrDefault(n => n.Output.Count > 0 && n.Output[0] == branch.BaseOutput)
                ?? throw new LoraException($"No node writes '{branch.BaseOutput}', the base product of '{w.Weight}'.");
            producer.Output[0] = branch.Output;
        }
        foreach (var name in new[] { w.A, w.B })
        {
            g.Initializer.RemoveAt(IndexOf(g, name));
            var input = g.Input.FirstOrDefault(i => i.Name == name);
            if (input is not null) g.Input.Remove(input);
        }
    }

    private static int IndexOf(GraphProto g, string name)
    {
        for (var i = 0; i < g.Initializer.Count; i++)
            if (g.Initializer[i].Name == name) return i;
        throw new LoraException($"The model has no initializer '{name}'.");
    }

    private static TensorProto Initializer(GraphProto g, string name) => g.Initializer[IndexOf(g, name)];

    private static HashSet<string> SubgraphInputs(GraphProto g)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Visit(GraphProto sub)
        {
            foreach (var n in sub.Node)
            {
                names.UnionWith(n.Input);
                foreach (var a in n.Attribute)
                {
                    if (a.G is not null) Visit(a.G);
                    foreach (var s in a.Graphs) Visit(s);
                }
            }
        }
        foreach (var n in g.Node)
            foreach (var a in n.Attribute)
            {
                if (a.G is not null) Visit(a.G);
                foreach (var s in a.Graphs) Visit(s);
            }
        return names;
    }
}
