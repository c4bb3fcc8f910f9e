using Onnx;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Artifacts;

/// <summary>Which BatchNormalization layers train with batch statistics (PyTorch's <c>model.train()</c>).</summary>
public enum BatchNormMode
{
    /// <summary>Layers whose scale or bias trains; frozen layers keep using (and keep) their running statistics.</summary>
    TrainableLayers,
    /// <summary>Every layer, frozen ones included (their running statistics update too).</summary>
    AllLayers,
    /// <summary>No layer: every BatchNormalization uses its running statistics, as in PyTorch's <c>model.eval()</c>.</summary>
    None,
}

/// <summary>How BatchNormalization behaves in the training graph.</summary>
public sealed record BatchNormTraining
{
    /// <summary>Which layers use batch statistics.</summary>
    public BatchNormMode Mode { get; init; } = BatchNormMode.TrainableLayers;

    /// <summary>
    /// Running mean/var of the batch-statistics layers become non-trainable state: graph inputs of the training and
    /// eval graphs, and training-graph outputs <c>&lt;name&gt;.running.out</c> with the updated values (PyTorch's
    /// update). False keeps them as initializers and emits no update (gradient checks).
    /// </summary>
    public bool StatisticsAsState { get; init; } = true;
}

/// <summary>
/// Rewrites BatchNormalization for training as PyTorch does it: the node normalises with the batch's mean and biased
/// variance over (N, spatial) computed by standard ops and fed to its mean/var inputs (so the BN gradient rule plus
/// the ReduceSum rules give the batch-statistics gradient), and the running statistics update as
/// running = (1 − m)·running + m·stat with m = 1 − ONNX momentum (ONNX default 0.9 = PyTorch's 0.1) and the unbiased
/// variance n/(n − 1)·var for running_var. ONNX Runtime's stock BatchNormalization kernel has no training mode.
/// </summary>
internal static class BatchNormTrainingRewrite
{
    public const string RunningOutputSuffix = TrainingGraphBuilder.StateOutputSuffix;

    /// <summary>The BatchNormalization nodes that use batch statistics, with their running mean/var initializers.</summary>
    public static List<(int Index, string Mean, string Var)> Select(GraphProto graph, ISet<string> trainable, BatchNormMode mode)
    {
        var result = new List<(int, string, string)>();
        if (mode == BatchNormMode.None) return result;
        var initializers = graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < graph.Node.Count; i++)
        {
            var n = graph.Node[i];
            if (n.OpType != "BatchNormalization" || !string.IsNullOrEmpty(n.Domain) && n.Domain != "ai.onnx" || n.Input.Count < 5) continue;
            var train = mode == BatchNormMode.AllLayers || trainable.Contains(n.Input[1]) || trainable.Contains(n.Input[2]);
            if (!train) continue;
            string mean = n.Input[3], variance = n.Input[4];
            if (!initializers.Contains(mean) || !initializers.Contains(variance))
                throw new UnsupportedModelException($"{n.Describe()}: its running mean/var must be initializers to train it with batch statistics.");
            if (!seen.Add(mean) || !seen.Add(variance))
                throw new UnsupportedModelException($"{n.Describe()}: running statistics shared between BatchNormalization nodes are not supported.");
            result.Add((i, mean, variance));
        }
        return result;
    }

    /// <summary>
    /// BatchNormalization nodes still in training_mode=1 (sources exported in training mode) that use their running
    /// statistics here: the attribute and the unused running-statistics outputs are dropped (ORT's stock kernel has
    /// no training mode). Outputs something reads are an error.
    /// </summary>
    public static void UseRunningStatistics(GraphProto graph)
    {
        var read = graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
        foreach (var n in graph.Node.Where(n => n.OpType == "BatchNormalization" && (string.IsNullOrEmpty(n.Domain) || n.Domain == "ai.onnx")))
        {
            if (n.Find("training_mode") is not { } tm) continue;
            if (tm.I != 0 && n.Output.Skip(1).Any(o => o.Length > 0 && read.Contains(o)))
                throw new UnsupportedModelException($"{n.Describe()}: training_mode=1 with its running-statistics outputs in use is not supported.");
            n.Attribute.Remove(tm);
            while (n.Output.Count > 1) n.Output.RemoveAt(n.Output.Count - 1);
        }
    }

    /// <summary>Node inputs 3 and 4 that are running statistics (never trainable parameters).</summary>
    public static HashSet<string> RunningStatistics(GraphProto graph) =>
        graph.Node.Where(n => n.OpType == "BatchNormalization" && n.Input.Count >= 5)
            .SelectMany(n => new[] { n.Input[3], n.Input[4] }).ToHashSet(StringComparer.Ordinal);

    /// <summary>
    /// Feeds the selected nodes batch statistics. With <paramref name="updates"/> non-null, also emits the updated
    /// running statistics, appending (running name, output name) pairs.
    /// </summary>
    public static void Apply(GraphEditor editor, IReadOnlyList<(int Index, string Mean, string Var)> nodes, List<(string State, string Output)>? updates)
    {
        var g = editor.Graph;
        var order = TopologicalOrder.Sort(g);
        var types = TensorTypeInference.Run(g, order, new ConstantTable(g));
        var targets = nodes.Select(n => g.Node[n.Index]).ToList();
        for (var k = 0; k < targets.Count; k++)
        {
            var node = targets[k];
            var (_, mean, variance) = nodes[k];
            var before = g.Node.Count;
            var x = node.Input[0];
            var hint = string.IsNullOrEmpty(node.Name) ? "bn" : node.Name;
            string axes;
            if (types.TryGetValue(x, out var t) && t.Rank is { } rank)
                axes = editor.ConstantInt64s(hint + "_stat_axes", [0, .. Enumerable.Range(2, rank - 2).Select(i => (long)i)]);
            else
            {
                var rankT = editor.Add("Size", [editor.Add("Shape", [x], hint + "_shape")], hint + "_rank");
                var spatial = editor.Add("Range", [editor.ConstantInt64s(hint + "_two", 2), rankT, editor.ConstantInt64s(hint + "_one", 1)], hint + "_spatial_axes");
                axes = editor.Add("Concat", [editor.ConstantInt64s(hint + "_zero", 0), spatial], hint + "_stat_axes", Attr.Int("axis", 0));
            }
            var elem = types.TryGetValue(x, out var tx) && tx.ElementType == DataType.Double ? DataType.Double : DataType.Float;
            string Scalar(string h, double v) => editor.AddInitializer(elem == DataType.Double ? TensorProtos.Double(h, [v]) : TensorProtos.Float(h, [(float)v]));
            var sum = editor.Add("ReduceSum", [x, axes], hint + "_batch_sum", Attr.Int("keepdims", 1));
            var count = editor.Add("Cast", [editor.Add("Div", [editor.Add("Size", [x], hint + "_size"), editor.Add("Size", [sum], hint + "_channels")], hint + "_count_i")],
                hint + "_count", Attr.Int("to", (long)elem));
            var mean4 = editor.Add("Div", [sum, count], hint + "_batch_mean_b");
            var centered = editor.Add("Sub", [x, mean4], hint + "_centered");
            var var4 = editor.Add("Div", [editor.Add("ReduceSum", [editor.Add("Mul", [centered, centered], hint + "_sq"), axes], hint + "_sq_sum", Attr.Int("keepdims", 1)), count], hint + "_batch_var_b");
            var flat = editor.ConstantInt64s(hint + "_flat", -1);
            var batchMean = editor.Add("Reshape", [mean4, flat], hint + "_batch_mean");
            var batchVar = editor.Add("Reshape", [var4, flat], hint + "_batch_var");
            node.Input[3] = batchMean;
            node.Input[4] = batchVar;
            var onnxMomentum = node.GetFloat("momentum", 0.9f);
            // training_mode=1 sources: ORT's stock kernel has no training mode, and the statistics come from here now.
            var tm = node.Find("training_mode");
            if (tm is not null) node.Attribute.Remove(tm);
            while (node.Output.Count > 1) node.Output.RemoveAt(node.Output.Count - 1);

            if (updates is not null)
            {
                var keep = Scalar(hint + "_keep", onnxMomentum);
                var take = Scalar(hint + "_take", 1 - (double)onnxMomentum);
                var one = Scalar(hint + "_one_f", 1);
                var unbiased = editor.Add("Mul", [batchVar, editor.Add("Div", [count, editor.Add("Sub", [count, one], hint + "_n_minus_1")], hint + "_bessel")], hint + "_batch_var_unbiased");
                var newMean = editor.Reserve(mean + RunningOutputSuffix);
                editor.AddNode("Add", [editor.Add("Mul", [mean, keep], hint + "_mean_kept"), editor.Add("Mul", [batchMean, take], hint + "_mean_taken")], [newMean]);
                var newVar = editor.Reserve(variance + RunningOutputSuffix);
                editor.AddNode("Add", [editor.Add("Mul", [variance, keep], hint + "_var_kept"), editor.Add("Mul", [unbiased, take], hint + "_var_taken")], [newVar]);
                updates.Add((mean, newMean));
                updates.Add((variance, newVar));
            }
            // Keep the graph topologically ordered: the statistics nodes go right before the BN node.
            var added = g.Node.Skip(before).ToList();
            for (var i = g.Node.Count - 1; i >= before; i--) g.Node.RemoveAt(i);
            var at = g.Node.IndexOf(node);
            for (var i = 0; i < added.Count; i++) g.Node.Insert(at + i, added[i]);
        }
    }
}
