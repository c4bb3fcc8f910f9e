using Onnx;
using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Training.Graphs;

/// <summary>
/// Derives from a training graph with gradient accumulation the variant a train step uses right after an optimizer
/// step (or at the start): the accumulation buffers would be discarded anyway, so each
/// <c>Where(lazy_reset_grad, g, Add(buffer, g))</c> is dropped and <c>g</c> is written straight to the
/// <c>&lt;p&gt;.grad.accumulation.out</c> output. That saves two full passes over every gradient per step (and the
/// buffer reads); steps that do accumulate keep using the artifacts' graph unchanged.
/// </summary>
internal static class FreshGradientGraph
{
    /// <summary>
    /// The variant of <paramref name="training"/> without accumulation, or null when the graph does not declare the
    /// builder's accumulation tail (<see cref="ArtifactContract.AccumulationTailKey"/>) or its nodes are not that form
    /// (then the caller keeps the accumulating graph for every step).
    /// </summary>
    public static ModelProto? TryCreate(ModelProto training, IReadOnlyList<string> parameters)
    {
        const string resetInput = ArtifactContract.LazyResetGradInput;
        const string bufferSuffix = ArtifactContract.AccumulationBufferSuffix;
        const string outputSuffix = ArtifactContract.AccumulationOutputSuffix;
        if (!training.MetadataProps.Any(m => m.Key == ArtifactContract.AccumulationTailKey && m.Value == ArtifactContract.AccumulationTailFormat))
            return null;
        var model = training.Clone();
        var graph = model.Graph;
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in graph.Node) foreach (var o in n.Output) if (o.Length > 0) producer[o] = n;
        var consumers = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in graph.Node) foreach (var i in n.Input) if (i.Length > 0) consumers[i] = consumers.GetValueOrDefault(i) + 1;

        var remove = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var renames = new Dictionary<string, string>(StringComparer.Ordinal);
        var identities = new List<NodeProto>();
        var graphOutputs = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var p in parameters)
        {
            var output = p + outputSuffix;
            var buffer = p + bufferSuffix;
            if (!producer.TryGetValue(output, out var where) || where.OpType != "Where" || where.Input.Count != 3 || where.Input[0] != resetInput)
                return null;
            var gradient = where.Input[1];
            if (!producer.TryGetValue(where.Input[2], out var add) || add.OpType != "Add"
                || !(add.Input.Count == 2 && add.Input[0] == buffer && add.Input[1] == gradient)
                || consumers.GetValueOrDefault(add.Output[0]) != 1)
                return null;
            remove.Add(where);
            remove.Add(add);
            // Let the gradient's producer write the output directly when nothing else reads the gradient; otherwise copy.
            if (producer.TryGetValue(gradient, out var gp) && consumers.GetValueOrDefault(gradient) == 2 && !graphOutputs.Contains(gradient)
                && !renames.ContainsKey(gradient))
                renames[gradient] = output;
            else
                identities.Add(new NodeProto { OpType = "Identity", Name = output + "_fresh", Input = { gradient }, Output = { output } });
        }

        var kept = graph.Node.Where(n => !remove.Contains(n)).ToList();
        foreach (var n in kept)
        {
            for (var i = 0; i < n.Output.Count; i++) if (renames.TryGetValue(n.Output[i], out var r)) n.Output[i] = r;
            for (var i = 0; i < n.Input.Count; i++) if (renames.TryGetValue(n.Input[i], out var r)) n.Input[i] = r;
        }
        kept.AddRange(identities);
        graph.Node.Clear();
        graph.Node.AddRange(kept);

        var stillRead = kept.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        var dropped = graph.Input.Where(i => (i.Name == resetInput || i.Name.EndsWith(bufferSuffix, StringComparison.Ordinal)) && !stillRead.Contains(i.Name)).ToList();
        foreach (var i in dropped) graph.Input.Remove(i);
        var droppedInfos = graph.ValueInfo.Where(v => renames.ContainsKey(v.Name)).ToList();
        foreach (var v in droppedInfos) graph.ValueInfo.Remove(v);
        return model;
    }
}
