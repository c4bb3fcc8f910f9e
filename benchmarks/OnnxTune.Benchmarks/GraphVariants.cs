using Onnx;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Benchmarks;

/// <summary>
/// Training-graph variants for A/B runs against the gradient builder's current output: the saved
/// training_model.onnx is rewritten back to an earlier form before the engine opens it.
/// </summary>
internal static class GraphVariants
{
    /// <summary>Applies the graph part of a variant (a no-op for the session-option variants).</summary>
    public static void Apply(string variant, string artifactsDirectory)
    {
        if (variant != "weight-grad-gemm") return;
        var path = Path.Combine(artifactsDirectory, "training_model.onnx");
        var model = OnnxModelReader.Load(path);
        var rewritten = WeightGradientsAsGemmTransA(model.Graph);
        if (rewritten == 0) throw new InvalidOperationException("weight-grad-gemm: no Transpose → Reshape → MatMul weight gradient found");
        OnnxModelWriter.Save(model, path);
    }

    // MatMul(Reshape(Transpose(x, [r-1, 0..r-2]), [K, -1]), dy) → Gemm(Reshape(x, [-1, K]), dy, transA=1), the form
    // MatMulGradient wrote before the explicit transpose.
    private static int WeightGradientsAsGemmTransA(GraphProto graph)
    {
        var producer = new Dictionary<string, NodeProto>();
        foreach (var n in graph.Node) foreach (var o in n.Output) producer[o] = n;
        var initializers = graph.Initializer.ToDictionary(t => t.Name);
        var count = 0;
        foreach (var node in graph.Node.Where(n => n.OpType == "MatMul").ToArray())
        {
            if (!producer.TryGetValue(node.Input[0], out var reshape) || reshape.OpType != "Reshape") continue;
            if (!producer.TryGetValue(reshape.Input[0], out var transpose) || transpose.OpType != "Transpose") continue;
            if (!initializers.TryGetValue(reshape.Input[1], out var shapeTensor)) continue;
            var shape = TensorProtos.ToInt64Array(shapeTensor);
            if (shape.Length != 2 || shape[1] != -1) continue;
            var perm = transpose.Attribute.Single(a => a.Name == "perm").Ints;
            if (perm[0] != perm.Count - 1) continue;
            var flatShape = $"{node.Name}.gemm_flat_shape";
            graph.Initializer.Add(TensorProtos.Int64(flatShape, [-1, shape[0]], 2));
            var flat = $"{node.Name}.gemm_flat";
            var index = graph.Node.IndexOf(node);
            graph.Node.Insert(index, new NodeProto { OpType = "Reshape", Name = flat, Input = { transpose.Input[0], flatShape }, Output = { flat } });
            node.OpType = "Gemm";
            node.Input[0] = flat;
            node.Attribute.Add(new AttributeProto { Name = "transA", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
            count++;
        }
        // The Transposes and their Reshapes are now dead.
        var used = graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToHashSet();
        foreach (var dead in graph.Node.Where(n => n.OpType == "Reshape" && !used.Contains(n.Output[0])).ToArray()) graph.Node.Remove(dead);
        used = graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToHashSet();
        foreach (var dead in graph.Node.Where(n => n.OpType == "Transpose" && !used.Contains(n.Output[0])).ToArray()) graph.Node.Remove(dead);
        return count;
    }
}
