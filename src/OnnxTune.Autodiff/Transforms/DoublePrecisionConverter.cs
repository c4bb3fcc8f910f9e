using Google.Protobuf;
using Onnx;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Transforms;

/// <summary>
/// Rewrites a float32 graph as float64 (initializers, constants, casts, inputs and outputs), so gradient checks run
/// with tight tolerances. Integer and bool tensors are untouched.
/// </summary>
public static class DoublePrecisionConverter
{
    // ONNX Runtime has no LayerNormalization kernel with a float64 stash type, so Mean/InvStdDev (which a training
    // graph may read) stay float32 inside the node and are cast to float64 for their consumers.
    private static void CastLayerNormStatistics(GraphProto g)
    {
        var casts = new List<NodeProto>();
        foreach (var n in g.Node)
        {
            if (n.OpType != "LayerNormalization" || !string.IsNullOrEmpty(n.Domain)) continue;
            var stash = n.Attribute.FirstOrDefault(a => a.Name == "stash_type")?.I ?? (long)DataType.Float;
            if (stash != (long)DataType.Float) continue;
            for (var i = 1; i < n.Output.Count; i++)
            {
                if (n.Output[i].Length == 0) continue;
                var stashed = n.Output[i] + "_stash_f32";
                casts.Add(new NodeProto
                {
                    OpType = "Cast", Name = stashed + "_to_f64", Input = { stashed }, Output = { n.Output[i] },
                    Attribute = { new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)DataType.Double } },
                });
                n.Output[i] = stashed;
            }
        }
        g.Node.AddRange(casts);
    }

    /// <summary>Returns a float64 copy of <paramref name="model"/>.</summary>
    public static ModelProto Convert(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var copy = model.Clone();
        ConvertGraph(copy.Graph);
        return copy;
    }

    private static void ConvertGraph(GraphProto g)
    {
        RewriteOpsWithoutDoubleKernels(g);
        CastLayerNormStatistics(g);
        for (var i = 0; i < g.Initializer.Count; i++) g.Initializer[i] = ConvertTensor(g.Initializer[i]);
        foreach (var v in g.Input.Concat(g.Output).Concat(g.ValueInfo))
            if (v.Type?.TensorType is { } tt && tt.ElemType == (int)DataType.Float) tt.ElemType = (int)DataType.Double;
        foreach (var n in g.Node)
        {
            foreach (var a in n.Attribute)
            {
                if (a.T is not null) a.T = ConvertTensor(a.T);
                if (a.G is not null) ConvertGraph(a.G);
                if (n.OpType is "Cast" or "RandomNormal" or "RandomUniform" or "RandomNormalLike" or "RandomUniformLike" or "EyeLike"
                    && a.Name is "to" or "dtype" && a.I == (long)DataType.Float)
                    a.I = (long)DataType.Double;
            }
            if (n.OpType == "Constant" && n.Attribute.FirstOrDefault(a => a.Name is "value_float") is { } vf)
            {
                n.Attribute.Remove(vf);
                n.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Double("v", [vf.F]) });
            }
            if (n.OpType == "Constant" && n.Attribute.FirstOrDefault(a => a.Name is "value_floats") is { } vfs)
            {
                n.Attribute.Remove(vfs);
                n.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Double("v", vfs.Floats.Select(f => (double)f).ToArray(), vfs.Floats.Count) });
            }
        }
    }

    // ONNX Runtime's CPU provider has no float64 Softplus, LeakyRelu, HardSigmoid, HardSwish, Conv, ConvTranspose, AveragePool, GlobalAveragePool or InstanceNormalization: rewrite them with equivalent ops that
    // have one, so checks of graphs using them (e.g. the BCE-with-logits loss) keep float64 tolerances.
    private static void RewriteOpsWithoutDoubleKernels(GraphProto g)
    {
        var counter = 0;
        string Name(string hint) => $"{hint}__f64_{counter++}";
        for (var i = 0; i < g.Node.Count; i++)
        {
            var n = g.Node[i];
            if (!string.IsNullOrEmpty(n.Domain)) continue;
            List<NodeProto>? replacement = null;
            if (n.OpType == "Softplus")
            {
                // softplus(x) = relu(x) + log(1 + exp(-|x|))
                string x = n.Input[0], y = n.Output[0];
                string abs = Name(y), neg = Name(y), exp = Name(y), one = Name(y), add = Name(y), log = Name(y), relu = Name(y);
                g.Initializer.Add(TensorProtos.Double(one, [1.0]));
                replacement =
                [
                    Node("Abs", [x], abs), Node("Neg", [abs], neg), Node("Exp", [neg], exp), Node("Add", [exp, one], add),
                    Node("Log", [add], log), Node("Relu", [x], relu), Node("Add", [relu, log], y),
                ];
            }
            else if (n.OpType == "LeakyRelu")
            {
                string x = n.Input[0], y = n.Output[0];
                var alpha = n.Attribute.FirstOrDefault(a => a.Name == "alpha")?.F ?? 0.01f;
                string zero = Name(y), alphaName = Name(y), positive = Name(y), scaled = Name(y);
                g.Initializer.Add(TensorProtos.Double(zero, [0.0]));
                g.Initializer.Add(TensorProtos.Double(alphaName, [alpha]));
                replacement = [Node("Greater", [x, zero], positive), Node("Mul", [x, alphaName], scaled), Node("Where", [positive, x, scaled], y)];
            }
            else if (n.OpType is "HardSigmoid" or "HardSwish")
            {
                // hardsigmoid(x) = clip(αx + β, 0, 1); hardswish(x) = x · hardsigmoid(x) with α = 1/6, β = 1/2
                string x = n.Input[0], y = n.Output[0];
                var swish = n.OpType == "HardSwish";
                var alpha = swish ? 1.0 / 6 : n.Attribute.FirstOrDefault(a => a.Name == "alpha")?.F ?? 0.2f;
                var beta = swish ? 0.5 : n.Attribute.FirstOrDefault(a => a.Name == "beta")?.F ?? 0.5f;
                string alphaName = Name(y), betaName = Name(y), zero = Name(y), one = Name(y), scaled = Name(y), shifted = Name(y);
                g.Initializer.Add(TensorProtos.Double(alphaName, [alpha]));
                g.Initializer.Add(TensorProtos.Double(betaName, [beta]));
                g.Initializer.Add(TensorProtos.Double(zero, [0.0]));
                g.Initializer.Add(TensorProtos.Double(one, [1.0]));
                var clipOut = swish ? Name(y) : y;
                replacement = [Node("Mul", [x, alphaName], scaled), Node("Add", [scaled, betaName], shifted), Node("Clip", [shifted, zero, one], clipOut)];
                if (swish) replacement.Add(Node("Mul", [x, clipOut], y));
            }
            else if (n.OpType is "Conv" or "ConvTranspose" or "AveragePool")
                replacement = DoubleConvEmulation.TryRewrite(g, n, Name);
            else if (n.OpType == "GlobalAveragePool")
            {
                // sum over the flattened spatial axes / count, reshaped to [N, C, 1, ...]
                string x = n.Input[0], y = n.Output[0];
                string flatShape = Name(y), axes = Name(y), flat = Name(y), sum = Name(y), shape = Name(y), count = Name(y), countF = Name(y),
                    mean = Name(y), two = Name(y), lead = Name(y), rest = Name(y), zero = Name(y), one = Name(y), restZero = Name(y), restOne = Name(y), target = Name(y),
                    flatDims = Name(y), big = Name(y), flatSpatial = Name(y), zeroD = Name(y);
                g.Initializer.Add(TensorProtos.Int64(flatShape, [0, 0, -1], 3));
                g.Initializer.Add(TensorProtos.Int64(axes, [2], 1));
                g.Initializer.Add(TensorProtos.Int64(two, [2], 1));
                g.Initializer.Add(TensorProtos.Int64(zero, [0], 1));
                g.Initializer.Add(TensorProtos.Int64(one, [1], 1));
                g.Initializer.Add(TensorProtos.Int64(big, [long.MaxValue], 1));
                g.Initializer.Add(TensorProtos.Int64(zeroD, [3], 1));
                replacement =
                [
                    Node("Reshape", [x, flatShape], flat), Node("ReduceSum", [flat, axes], sum), Node("Shape", [flat], flatDims),
                    Node("Slice", [flatDims, two, zeroD], flatSpatial), Node("Cast", [flatSpatial], count), Node("Div", [sum, count], mean),
                    Node("Shape", [x], shape), Node("Slice", [shape, zero, two], lead), Node("Slice", [shape, two, big], rest),
                    Node("Mul", [rest, zero], restZero), Node("Add", [restZero, one], restOne), Node("Concat", [lead, restOne], target),
                    Node("Reshape", [mean, target], y),
                ];
                replacement[4].Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)DataType.Double });
                replacement[11].Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
            }
            else if (n.OpType == "InstanceNormalization")
            {
                // On the [N, C, P] view: xhat = (x − mean) / sqrt(var + ε) over P, then scale and bias per channel.
                string x = n.Input[0], scale = n.Input[1], bias = n.Input[2], y = n.Output[0];
                var eps = n.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
                string flatShape = Name(y), axes = Name(y), chan = Name(y), epsName = Name(y), two = Name(y), three = Name(y);
                string flat = Name(y), sum = Name(y), dims = Name(y), p = Name(y), count = Name(y), mean = Name(y), xc = Name(y), sq = Name(y), sqSum = Name(y),
                    variance = Name(y), ve = Name(y), std = Name(y), xhat = Name(y), s3 = Name(y), b3 = Name(y), scaled = Name(y), shifted = Name(y), shape = Name(y);
                g.Initializer.Add(TensorProtos.Int64(flatShape, [0, 0, -1], 3));
                g.Initializer.Add(TensorProtos.Int64(axes, [2], 1));
                g.Initializer.Add(TensorProtos.Int64(chan, [1, -1, 1], 3));
                g.Initializer.Add(TensorProtos.Int64(two, [2], 1));
                g.Initializer.Add(TensorProtos.Int64(three, [3], 1));
                g.Initializer.Add(TensorProtos.Double(epsName, [eps]));
                replacement =
                [
                    Node("Reshape", [x, flatShape], flat), Node("ReduceSum", [flat, axes], sum), Node("Shape", [flat], dims), Node("Slice", [dims, two, three], p),
                    Node("Cast", [p], count), Node("Div", [sum, count], mean), Node("Sub", [flat, mean], xc), Node("Mul", [xc, xc], sq),
                    Node("ReduceSum", [sq, axes], sqSum), Node("Div", [sqSum, count], variance), Node("Add", [variance, epsName], ve), Node("Sqrt", [ve], std),
                    Node("Div", [xc, std], xhat), Node("Reshape", [scale, chan], s3), Node("Reshape", [bias, chan], b3), Node("Mul", [xhat, s3], scaled),
                    Node("Add", [scaled, b3], shifted), Node("Shape", [x], shape), Node("Reshape", [shifted, shape], y),
                ];
                replacement[4].Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)DataType.Double });
            }
            if (replacement is null) continue;
            g.Node.RemoveAt(i);
            for (var k = 0; k < replacement.Count; k++) g.Node.Insert(i + k, replacement[k]);
            i += replacement.Count - 1;
        }

        NodeProto Node(string op, string[] inputs, string output)
        {
            var node = new NodeProto { OpType = op, Name = Name(op) };
            node.Input.AddRange(inputs);
            node.Output.Add(output);
            return node;
        }
    }

    private static TensorProto ConvertTensor(TensorProto t)
    {
        if (t.DataType != (int)DataType.Float) return t;
        var values = TensorProtos.ToDoubleArray(t);
        var d = TensorProtos.Double(t.Name, values, t.Dims.ToArray());
        d.DocString = t.DocString;
        return d;
    }
}
