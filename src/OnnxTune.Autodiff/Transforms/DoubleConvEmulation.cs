using Onnx;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Autodiff.Transforms;

/// <summary>
/// Conv and ConvTranspose written with ops ONNX Runtime's CPU provider runs in float64 (Pad, Slice, MatMul, Sum,
/// Reshape), so gradient checks of CNNs keep float64 tolerances: one strided Slice (Conv) or one zero-upsampled,
/// shifted Pad (ConvTranspose) per kernel offset, contracted with that offset's weights by a grouped MatMul. Needs
/// the kernel size statically (the weight initializer's dims or a <c>kernel_shape</c> attribute); returns null
/// otherwise, and the check falls back to float32.
/// </summary>
internal sealed class DoubleConvEmulation(GraphProto graph, Func<string, string> name)
{
    private readonly List<NodeProto> _nodes = [];

    public static List<NodeProto>? TryRewrite(GraphProto graph, NodeProto node, Func<string, string> name)
    {
        var e = new DoubleConvEmulation(graph, name);
        return node.OpType switch
        {
            "Conv" => e.Conv(node) ? e._nodes : null,
            "ConvTranspose" => e.ConvTranspose(node) ? e._nodes : null,
            "AveragePool" => e.AveragePool(node) ? e._nodes : null,
            _ => null,
        };
    }

    private static AttributeProto? A(NodeProto n, string key) => n.Attribute.FirstOrDefault(a => a.Name == key);

    private static long[]? Ints(NodeProto n, string key) => A(n, key) is { } a && a.Ints.Count > 0 ? a.Ints.ToArray() : null;

    private long[]? Kernel(NodeProto n)
    {
        if (Ints(n, "kernel_shape") is { } k) return k;
        var w = graph.Initializer.FirstOrDefault(t => t.Name == n.Input[1]);
        if (w is not null) return w.Dims.Skip(2).ToArray();
        var vi = graph.Input.Concat(graph.ValueInfo).FirstOrDefault(v => v.Name == n.Input[1]);
        var dims = vi?.Type?.TensorType?.Shape?.Dim;
        if (dims is null || dims.Count < 3 || dims.Skip(2).Any(d => !d.HasDimValue)) return null;
        return dims.Skip(2).Select(d => d.DimValue).ToArray();
    }

    private string Emit(string op, string[] inputs, params AttributeProto[] attrs)
    {
        var output = name(op);
        var node = new NodeProto { OpType = op, Name = name(op + "_node") };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        node.Attribute.AddRange(attrs);
        _nodes.Add(node);
        return output;
    }

    private string I64(params long[] values)
    {
        var n = name("i64");
        graph.Initializer.Add(TensorProtos.Int64(n, values, values.Length));
        return n;
    }

    private string Slice1(string shape, long start, long end) => Emit("Slice", [shape, I64(start), I64(end)]);

    private static AttributeProto IntAttr(string key, long v) => new() { Name = key, Type = AttributeProto.Types.AttributeType.Int, I = v };

    private bool Conv(NodeProto n)
    {
        var kernel = Kernel(n);
        if (kernel is null) return false;
        var k = kernel.Length;
        var strides = Ints(n, "strides") ?? Enumerable.Repeat(1L, k).ToArray();
        var dilations = Ints(n, "dilations") ?? Enumerable.Repeat(1L, k).ToArray();
        var group = A(n, "group")?.I ?? 1;
        var autoPad = A(n, "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
        string x = n.Input[0], w = n.Input[1];
        var xpad = x;
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            // total = max(0, (ceil(L/s) − 1)·s + d·(K − 1) + 1 − L), split as ORT does
            var spatial = Slice1(Emit("Shape", [x]), 2, 2 + k);
            var s = I64(strides);
            var ones = I64(Enumerable.Repeat(1L, k).ToArray());
            var o = Emit("Div", [Emit("Sub", [Emit("Add", [spatial, s]), ones]), s]);
            var reach = I64(Enumerable.Range(0, k).Select(i => dilations[i] * (kernel[i] - 1) + 1).ToArray());
            var total = Emit("Max", [Emit("Sub", [Emit("Add", [Emit("Mul", [Emit("Sub", [o, ones]), s]), reach]), spatial]), I64(new long[k])]);
            var small = Emit("Div", [total, I64(Enumerable.Repeat(2L, k).ToArray())]);
            var begin = autoPad == "SAME_UPPER" ? small : Emit("Sub", [total, small]);
            var end = Emit("Sub", [total, begin]);
            xpad = Emit("Pad", [x, Emit("Concat", [I64(0, 0), begin, I64(0, 0), end], IntAttr("axis", 0))]);
        }
        else if (autoPad is "NOTSET" or "" && Ints(n, "pads") is { } pads && pads.Any(p => p != 0))
            xpad = Emit("Pad", [x, I64([0, 0, .. pads[..k], 0, 0, .. pads[k..]])]);

        var xShape = Emit("Shape", [xpad]);
        var wShape = Emit("Shape", [w]);
        var cg = Slice1(wShape, 1, 2);
        var spatialAxes = Enumerable.Range(2, k).Select(i => (long)i).ToArray();
        var terms = new List<string>();
        foreach (var offset in Offsets(kernel))
        {
            var starts = offset.Select((o, i) => o * dilations[i]).ToArray();
            var ends = offset.Select((o, i) => dilations[i] * (kernel[i] - 1 - o) is var back and > 0 ? -back : long.MaxValue).ToArray();
            var window = Emit("Slice", [xpad, I64(starts), I64(ends), I64(spatialAxes), I64(strides)]);
            var wk = Emit("Slice", [w, I64(offset), I64(offset.Select(o => o + 1).ToArray()), I64(spatialAxes)]);
            // [G, Mg, Cg] · [N, G, Cg, P] → [N, G, Mg, P]
            var wg = Emit("Reshape", [wk, Emit("Concat", [I64(group, -1), cg], IntAttr("axis", 0))]);
            var xg = Emit("Reshape", [window, Emit("Concat", [Slice1(xShape, 0, 1), I64(group), cg, I64(-1)], IntAttr("axis", 0))]);
            var prod = Emit("MatMul", [wg, xg]);
            var outSpatial = Slice1(Emit("Shape", [window]), 2, 2 + k);
            terms.Add(Emit("Reshape", [prod, Emit("Concat", [Slice1(xShape, 0, 1), I64(-1), outSpatial], IntAttr("axis", 0))]));
        }
        var y = terms.Count == 1 ? terms[0] : Emit("Sum", [.. terms]);
        if (n.Input.Count > 2 && n.Input[2].Length > 0)
            y = Emit("Add", [y, Emit("Reshape", [n.Input[2], I64([1, -1, .. Enumerable.Repeat(1L, k)])])]);
        _nodes.Add(new NodeProto { OpType = "Identity", Name = name("conv_out"), Input = { y }, Output = { n.Output[0] } });
        return true;
    }

    /// <summary>
    /// AveragePool as the emulated Conv of every channel (folded into the batch) with a kernel of ones: divided by the
    /// kernel size, or with <c>count_include_pad</c> 0 by the same Conv of a tensor of ones (the in-bounds count).
    /// ceil_mode and auto_pad are left to the float32 fallback.
    /// </summary>
    private bool AveragePool(NodeProto n)
    {
        if (Ints(n, "kernel_shape") is not { } kernel || (A(n, "ceil_mode")?.I ?? 0) != 0
            || A(n, "auto_pad") is { } ap && ap.S.ToStringUtf8() is not ("NOTSET" or "")) return false;
        var k = kernel.Length;
        var pads = Ints(n, "pads") ?? new long[2 * k];
        var includePad = (A(n, "count_include_pad")?.I ?? 0) != 0 || pads.All(p => p == 0);
        string x = n.Input[0];
        var planes = Emit("Reshape", [x, I64([-1, 1, .. new long[k]])]); // [N·C, 1, spatial...]
        var size = kernel.Aggregate(1L, (a, b) => a * b);
        var weight = name("avgpool_kernel");
        graph.Initializer.Add(TensorProtos.Double(weight, Enumerable.Repeat(includePad ? 1.0 / size : 1.0, (int)size).ToArray(), [1, 1, .. kernel]));
        string Pool(string input)
        {
            var conv = new NodeProto { OpType = "Conv", Input = { input, weight }, Output = { name("avgpool_sum") } };
            conv.Attribute.Add(new AttributeProto { Name = "kernel_shape", Type = AttributeProto.Types.AttributeType.Ints, Ints = { kernel } });
            conv.Attribute.Add(new AttributeProto { Name = "pads", Type = AttributeProto.Types.AttributeType.Ints, Ints = { pads } });
            foreach (var key in new[] { "strides", "dilations" })
                if (Ints(n, key) is { } v) conv.Attribute.Add(new AttributeProto { Name = key, Type = AttributeProto.Types.AttributeType.Ints, Ints = { v } });
            Conv(conv);
            return conv.Output[0];
        }
        var pooled = Pool(planes);
        if (!includePad)
        {
            string zero = name("avgpool_zero"), one = name("avgpool_one");
            graph.Initializer.Add(TensorProtos.Double(zero, [0.0]));
            graph.Initializer.Add(TensorProtos.Double(one, [1.0]));
            pooled = Emit("Div", [pooled, Pool(Emit("Add", [Emit("Mul", [planes, zero]), one]))]);
        }
        var target = Emit("Concat", [Slice1(Emit("Shape", [x]), 0, 2), Slice1(Emit("Shape", [pooled]), 2, 2 + k)], IntAttr("axis", 0));
        _nodes.Add(new NodeProto { OpType = "Reshape", Name = name("avgpool_out"), Input = { pooled, target }, Output = { n.Output[0] } });
        return true;
    }

    private bool ConvTranspose(NodeProto n)
    {
        if (A(n, "output_shape") is not null || A(n, "auto_pad") is { } ap && ap.S.ToStringUtf8() is not ("NOTSET" or "")) return false;
        var kernel = Kernel(n);
        if (kernel is null) return false;
        var k = kernel.Length;
        var strides = Ints(n, "strides") ?? Enumerable.Repeat(1L, k).ToArray();
        var dilations = Ints(n, "dilations") ?? Enumerable.Repeat(1L, k).ToArray();
        var pads = Ints(n, "pads") ?? new long[2 * k];
        var outputPadding = Ints(n, "output_padding") ?? new long[k];
        var group = A(n, "group")?.I ?? 1;
        string dy = n.Input[0], w = n.Input[1];
        var dyShape = Emit("Shape", [dy]);
        var wShape = Emit("Shape", [w]);
        var cgo = Slice1(wShape, 1, 2);
        var mg = Emit("Div", [Slice1(wShape, 0, 1), I64(group)]);
        var batch = Slice1(dyShape, 0, 1);
        var dyg = Emit("Reshape", [dy, Emit("Concat", [batch, I64(group), mg, I64(-1)], IntAttr("axis", 0))]); // [N, G, Mg, P]
        var inSpatial = Slice1(dyShape, 2, 2 + k);
        var spatialAxes = Enumerable.Range(2, k).Select(i => (long)i).ToArray();
        var terms = new List<string>();
        foreach (var offset in Offsets(kernel))
        {
            var wk = Emit("Slice", [w, I64(offset), I64(offset.Select(o => o + 1).ToArray()), I64(spatialAxes)]);
            var wg = Emit("Transpose", [Emit("Reshape", [wk, Emit("Concat", [I64(group), mg, cgo], IntAttr("axis", 0))])],
                new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 0, 2, 1 } }); // [G, Cgo, Mg]
            var prod = Emit("MatMul", [wg, dyg]); // [N, G, Cgo, P]
            var t = Emit("Reshape", [prod, Emit("Concat", [batch, I64(-1), inSpatial], IntAttr("axis", 0))]); // [N, C, O...]
            // Zero-upsample by the strides, then shift to offset·dilation.
            for (var a = 0; a < k; a++)
            {
                if (strides[a] == 1) continue;
                var axis = 2 + a;
                var u = Emit("Unsqueeze", [t, I64(axis + 1)]);
                var padSpec = new long[2 * (k + 3)];
                padSpec[k + 3 + axis + 1] = strides[a] - 1;
                var spread = Emit("Pad", [u, I64(padSpec)]);
                var shape = Emit("Shape", [t]);
                var merged = Emit("Reshape", [spread, Emit("Concat", [Slice1(shape, 0, axis), I64(-1), Slice1(shape, axis + 1, k + 2)], IntAttr("axis", 0))]);
                t = Emit("Slice", [merged, I64(0), I64(-(strides[a] - 1)), I64(axis)]);
            }
            var shift = new long[2 * (k + 2)];
            for (var a = 0; a < k; a++)
            {
                shift[2 + a] = offset[a] * dilations[a];
                shift[k + 2 + 2 + a] = dilations[a] * (kernel[a] - 1 - offset[a]) + outputPadding[a];
            }
            terms.Add(shift.Any(v => v != 0) ? Emit("Pad", [t, I64(shift)]) : t);
        }
        var full = terms.Count == 1 ? terms[0] : Emit("Sum", [.. terms]);
        var y = full;
        if (pads.Any(p => p != 0))
            y = Emit("Slice", [full, I64(pads[..k]), I64(pads[k..].Select(p => p > 0 ? -p : long.MaxValue).ToArray()), I64(spatialAxes)]);
        if (n.Input.Count > 2 && n.Input[2].Length > 0)
            y = Emit("Add", [y, Emit("Reshape", [n.Input[2], I64([1, -1, .. Enumerable.Repeat(1L, k)])])]);
        _nodes.Add(new NodeProto { OpType = "Identity", Name = name("convt_out"), Input = { y }, Output = { n.Output[0] } });
        return true;
    }

    private static IEnumerable<long[]> Offsets(long[] kernel)
    {
        var current = new long[kernel.Length];
        while (true)
        {
            yield return current.ToArray();
            var i = kernel.Length - 1;
            while (i >= 0 && ++current[i] == kernel[i]) current[i--] = 0;
            if (i < 0) yield break;
        }
    }
}
