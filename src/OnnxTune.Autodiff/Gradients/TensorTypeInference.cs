using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Gradients;

/// <summary>What is statically known of a tensor: element type, and shape (dims are null when symbolic/unknown).</summary>
public sealed record TensorTypeInfo(DataType ElementType, long?[]? Dims)
{
    /// <summary>Rank when known.</summary>
    public int? Rank => Dims?.Length;

    /// <summary>True when every dim is a known number.</summary>
    public bool IsFullyStatic => Dims is not null && Dims.All(d => d.HasValue);

    /// <summary>
    /// Per-dim symbols of the dims that are not static (parallel to <see cref="Dims"/>): a <c>dim_param</c> name, or a
    /// generated name for a size an op produced. Two dims with the same symbol have the same size at run time. Null
    /// (or a null entry) where nothing is tracked.
    /// </summary>
    public string?[]? Symbols { get; init; }

    /// <summary>Symbol of dim <paramref name="axis"/>, or null when the dim is static or untracked.</summary>
    public string? SymbolAt(int axis) =>
        Dims is { } d && axis >= 0 && axis < d.Length && d[axis] is null && Symbols is { } s && axis < s.Length ? s[axis] : null;
}

/// <summary>One dim during inference: a static size, or a symbol (null when nothing is known).</summary>
internal readonly record struct SymDim(long? Value, string? Symbol)
{
    public static SymDim Of(long value) => new(value, null);

    public static readonly SymDim One = new(1, null);

    public static readonly SymDim Unknown = new(null, null);

    /// <summary>Same size at run time for sure.</summary>
    public bool SameAs(SymDim other) =>
        Value is { } v ? other.Value == v : Symbol is not null && other.Value is null && other.Symbol == Symbol;

    public bool IsOne => Value == 1;
}

/// <summary>
/// A small forward pass that propagates element types (always) and shapes/ranks (for common ops) through a graph.
/// Dims that are not static carry symbols (from <c>dim_param</c> or generated per produced tensor), so two tensors
/// of the same symbolic shape are known to match. Autodiff uses it to prune integer paths and to decide broadcast
/// reductions statically when it can; where a shape is unknown the rules fall back to runtime shape ops.
/// </summary>
internal static class TensorTypeInference
{
    public static Dictionary<string, TensorTypeInfo> Run(GraphProto graph, IReadOnlyList<NodeProto> orderedNodes, ConstantTable constants)
    {
        var info = new Dictionary<string, TensorTypeInfo>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer)
            info[t.Name] = new((DataType)t.DataType, t.Dims.Select(d => (long?)d).ToArray());
        foreach (var v in graph.Input.Concat(graph.ValueInfo).Concat(graph.Output))
            if (!info.ContainsKey(v.Name) && ValueInfos.ElemType(v) != DataType.Undefined)
                info[v.Name] = Make(ValueInfos.ElemType(v), FromValueInfo(v));
        // Unnamed dims of graph inputs are still one size per run: give them their own symbols.
        foreach (var v in graph.Input)
            if (info.TryGetValue(v.Name, out var ti) && ti.Dims is not null)
                info[v.Name] = Make(ti.ElementType, Fresh(v.Name, Sym(ti)!));

        // Element values of small int64 tensors (shapes being computed, e.g. Shape -> Gather -> Concat -> Reshape),
        // as static numbers or dim symbols.
        var values = new Dictionary<string, SymDim[]>(StringComparer.Ordinal);
        foreach (var node in orderedNodes)
        {
            TensorTypeInfo? In(int i) => i < node.Input.Count && node.Input[i].Length > 0 && info.TryGetValue(node.Input[i], out var x) ? x : null;
            SymDim[]? Val(int i) =>
                i >= node.Input.Count || node.Input[i].Length == 0 ? null
                : values.TryGetValue(node.Input[i], out var v) ? v
                : constants.TryGet(node.Input[i], out var c) ? c.Select(SymDim.Of).ToArray() : null;
            var outs = Infer(node, In, Val, constants);
            for (var i = 0; i < node.Output.Count && i < outs.Length; i++)
            {
                var name = node.Output[i];
                if (outs[i] is not { } inferred || name.Length == 0) continue;
                var dims = Sym(inferred);
                // Value infos from the exporter win when they say more.
                if (info.TryGetValue(name, out var existing) && existing.Dims is not null && existing.ElementType != DataType.Undefined)
                {
                    // Per dim, what inference derived (a size, or a symbol tied to the inputs) beats a dim_param.
                    var known = Sym(existing)!;
                    if (dims is not null && dims.Length == known.Length)
                        for (var k = 0; k < known.Length; k++)
                            if (known[k].Value is null && (dims[k].Value is not null || dims[k].Symbol is not null))
                                known[k] = dims[k];
                    info[name] = Make(existing.ElementType, Fresh(name, known));
                    continue;
                }
                info[name] = Make(inferred.ElementType, dims is null ? null : Fresh(name, dims));
            }
            if (node.Output.Count > 0 && node.Output[0].Length > 0 && InferValue(node, In, Val) is { } value)
                values[node.Output[0]] = value;
        }
        return info;
    }

    // Values of shape arithmetic: what a Shape node reads, and how Gather/Slice/Unsqueeze/Concat/Cast rearrange it.
    private static SymDim[]? InferValue(NodeProto node, Func<int, TensorTypeInfo?> input, Func<int, SymDim[]?> value)
    {
        switch (node.OpType)
        {
            case "Shape":
                {
                    if (Sym(input(0)) is not { } d) return null;
                    var r = d.Length;
                    var start = (int)Math.Clamp(Normalize(node.GetInt("start", 0), r), 0, r);
                    var end = (int)Math.Clamp(Normalize(node.GetInt("end", r), r), 0, r);
                    return end > start ? d[start..end] : [];
                }
            case "Identity" or "Unsqueeze" or "Squeeze":
                return value(0);
            case "Cast":
                return (DataType)node.GetInt("to", 1) is DataType.Int64 or DataType.Int32 ? value(0) : null;
            case "Gather":
                {
                    if (value(0) is not { } data || value(1) is not { } idx || node.GetInt("axis", 0) != 0) return null;
                    var res = new SymDim[idx.Length];
                    for (var k = 0; k < idx.Length; k++)
                    {
                        if (idx[k].Value is not { } i) return null;
                        i = i < 0 ? i + data.Length : i;
                        if (i < 0 || i >= data.Length) return null;
                        res[k] = data[i];
                    }
                    return res;
                }
            case "Concat":
                {
                    var parts = new List<SymDim>();
                    for (var i = 0; i < node.Input.Count; i++)
                        if (value(i) is { } v) parts.AddRange(v);
                        else return null;
                    return input(0)?.Rank is 1 ? [.. parts] : null;
                }
            case "Slice":
                {
                    if (value(0) is not { } data || value(1) is not [{ Value: { } s }] || value(2) is not [{ Value: { } e }]) return null;
                    if (node.Input.Count > 4 && node.Input[4].Length > 0 && value(4) is not [{ Value: 1 }]) return null;
                    var n = data.Length;
                    s = Math.Clamp(s < 0 ? s + n : s, 0, n);
                    e = Math.Clamp(e < 0 ? e + n : e, 0, n);
                    return e > s ? data[(int)s..(int)e] : [];
                }
            case "Add" or "Sub" or "Mul" or "Div":
                {
                    if (value(0) is not { } a || value(1) is not { } b || (a.Length != b.Length && a.Length != 1 && b.Length != 1)) return null;
                    var n = Math.Max(a.Length, b.Length);
                    var res = new SymDim[n];
                    for (var k = 0; k < n; k++)
                    {
                        SymDim x = a[a.Length == 1 ? 0 : k], y = b[b.Length == 1 ? 0 : k];
                        res[k] = (node.OpType, x.Value, y.Value) switch
                        {
                            ("Add", { } p, { } q) => SymDim.Of(p + q),
                            ("Sub", { } p, { } q) => SymDim.Of(p - q),
                            ("Mul", { } p, { } q) => SymDim.Of(p * q),
                            ("Div", { } p, { } q) when q != 0 => SymDim.Of(p / q),
                            ("Add" or "Sub", _, 0) or ("Mul" or "Div", _, 1) => x,
                            ("Add", 0, _) or ("Mul", 1, _) => y,
                            _ => SymDim.Unknown,
                        };
                    }
                    return res;
                }
            default:
                return null;
        }
    }

    private static SymDim[]? FromValueInfo(ValueInfoProto v)
    {
        var shape = v.Type?.TensorType?.Shape;
        if (shape is null) return null;
        return shape.Dim.Select(d => d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => SymDim.Of(d.DimValue),
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam when d.DimParam.Length > 0 => new SymDim(null, d.DimParam),
            _ => SymDim.Unknown,
        }).ToArray();
    }

    // A generated symbol names "dim k of this tensor"; it cannot clash with a dim_param in practice.
    private static SymDim[] Fresh(string tensor, SymDim[] dims)
    {
        for (var k = 0; k < dims.Length; k++)
            if (dims[k].Value is null && dims[k].Symbol is null) dims[k] = new SymDim(null, $"?{tensor}:{k}");
        return dims;
    }

    internal static SymDim[]? Sym(TensorTypeInfo? t) =>
        t?.Dims is { } d ? d.Select((v, i) => v is { } x ? SymDim.Of(x) : new SymDim(null, t.SymbolAt(i))).ToArray() : null;

    internal static TensorTypeInfo Make(DataType type, SymDim[]? dims) =>
        new(type, dims?.Select(d => d.Value).ToArray())
        {
            Symbols = dims is null || dims.All(d => d.Value is not null || d.Symbol is null) ? null : dims.Select(d => d.Value is null ? d.Symbol : null).ToArray(),
        };

    private static TensorTypeInfo?[] Infer(NodeProto node, Func<int, TensorTypeInfo?> input, Func<int, SymDim[]?> value, ConstantTable all)
    {
        var x = input(0);
        var xs = Sym(x);
        DataType T0 = x?.ElementType ?? DataType.Undefined;
        TensorTypeInfo Of(DataType t, SymDim[]? d) => Make(t, d);
        TensorTypeInfo Same() => Make(T0, xs);
        TensorTypeInfo TypeOnly(DataType t) => new(t, null);
        TensorTypeInfo UnknownDims(DataType t, int rank) => Make(t, Enumerable.Repeat(SymDim.Unknown, rank).ToArray());
        switch (node.OpType)
        {
            case "Shape":
                {
                    if (x?.Rank is not { } r) return [Of(DataType.Int64, [SymDim.Unknown])];
                    var start = (int)Math.Clamp(Normalize(node.GetInt("start", 0), r), 0, r);
                    var end = (int)Math.Clamp(Normalize(node.GetInt("end", r), r), 0, r);
                    return [Of(DataType.Int64, [SymDim.Of(Math.Max(0, end - start))])];
                }
            case "Size": return [Of(DataType.Int64, [])];
            case "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" or "IsNaN" or "IsInf":
                return [Of(DataType.Bool, BroadcastAll(node, input))];
            case "ArgMax" or "ArgMin" or "NonZero": return [TypeOnly(DataType.Int64)];
            case "Cast": return [Of((DataType)node.GetInt("to", 1), xs)];
            case "CastLike": return [Of(input(1)?.ElementType ?? DataType.Undefined, xs)];
            case "Constant":
                {
                    var v = node.Find("value");
                    if (v?.T is { } t) return [new((DataType)t.DataType, t.Dims.Select(d => (long?)d).ToArray())];
                    if (node.Find("value_float") is not null) return [new(DataType.Float, [])];
                    if (node.Find("value_int") is not null) return [new(DataType.Int64, [])];
                    if (node.Find("value_floats") is { } fs) return [new(DataType.Float, [fs.Floats.Count])];
                    if (node.Find("value_ints") is { } @is) return [new(DataType.Int64, [@is.Ints.Count])];
                    return [null];
                }
            case "ConstantOfShape":
                {
                    var t = node.Find("value")?.T;
                    var dt = t is null ? DataType.Float : (DataType)t.DataType;
                    if (value(0) is { } cs) return [Of(dt, cs)];
                    var shapeLen = input(0)?.Dims is { Length: 1 } d0 ? d0[0] : null;
                    return [shapeLen is { } r ? UnknownDims(dt, (int)r) : TypeOnly(dt)];
                }
            case "Range": return [Of(T0, [SymDim.Unknown])];
            case "SoftmaxCrossEntropyLoss":
                return [node.GetString("reduction", "mean") == "none" ? Of(T0, Sym(input(1))) : Of(T0, []), Same()];
            case "Dropout": return [Same(), Of(DataType.Bool, xs)];
            case "LayerNormalization":
                {
                    var stash = (DataType)node.GetInt("stash_type", 1);
                    if (xs is null) return [Same(), TypeOnly(stash), TypeOnly(stash)];
                    var axis = (int)Normalize(node.GetInt("axis", -1), xs.Length);
                    var reduced = xs.Select((v, i) => i < axis ? v : SymDim.One).ToArray();
                    return [Same(), Of(stash, reduced), Of(stash, reduced.ToArray())];
                }
            case "Add" or "Sub" or "Mul" or "Div" or "Pow" or "PRelu" or "Max" or "Min" or "Sum" or "Mean":
                return [Of(T0, BroadcastAll(node, input))];
            case "Where": return [Of(input(1)?.ElementType ?? DataType.Undefined, BroadcastAll(node, input))];
            case "Relu" or "LeakyRelu" or "Sigmoid" or "Tanh" or "Exp" or "Log" or "Sqrt" or "Neg" or "Abs" or "Erf" or "Identity"
                or "Softmax" or "LogSoftmax" or "Gelu" or "Softplus" or "Elu" or "Selu" or "HardSigmoid" or "Sign" or "Reciprocal"
                or "Clip" or "Floor" or "Ceil" or "Round" or "Sin" or "Cos" or "InstanceNormalization":
                return [Same()];
            case "MatMul":
                {
                    var a = xs; var b = Sym(input(1));
                    if (a is null || b is null || a.Length < 1 || b.Length < 1) return [TypeOnly(T0)];
                    if (a.Length == 1 && b.Length == 1) return [Of(T0, [])];
                    if (a.Length == 1) return [Of(T0, [.. b[..^2], b[^1]])];
                    if (b.Length == 1) return [Of(T0, a[..^1])];
                    var batch = BroadcastDims(a[..^2], b[..^2]);
                    return [Of(T0, [.. batch, a[^2], b[^1]])];
                }
            case "Gemm":
                {
                    var a = xs; var b = Sym(input(1));
                    if (a is not { Length: 2 } || b is not { Length: 2 }) return [UnknownDims(T0, 2)];
                    var m = node.GetInt("transA", 0) != 0 ? a[1] : a[0];
                    var n = node.GetInt("transB", 0) != 0 ? b[0] : b[1];
                    return [Of(T0, [m, n])];
                }
            case "Transpose":
                {
                    if (xs is not { } d) return [TypeOnly(T0)];
                    var perm = node.GetInts("perm") ?? Enumerable.Range(0, d.Length).Reverse().Select(i => (long)i).ToArray();
                    return [Of(T0, perm.Select(p => d[p]).ToArray())];
                }
            case "Gather":
                {
                    var data = xs; var idx = Sym(input(1));
                    if (data is null || idx is null) return [TypeOnly(T0)];
                    var axis = (int)Normalize(node.GetInt("axis", 0), data.Length);
                    return [Of(T0, [.. data[..axis], .. idx, .. data[(axis + 1)..]])];
                }
            case "ReduceMean" or "ReduceSum" or "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceL2" or "ReduceSumSquare" or "ReduceLogSumExp":
                {
                    if (xs is not { } d) return [TypeOnly(T0)];
                    var keep = node.GetInt("keepdims", 1) != 0;
                    long[]? axes = node.GetInts("axes") ?? ConstantInts(node, 1, all);
                    if (axes is null)
                    {
                        var noop = node.GetInt("noop_with_empty_axes", 0) != 0;
                        if (node.Input.Count > 1 && node.Input[1].Length > 0) return [keep ? UnknownDims(T0, d.Length) : TypeOnly(T0)];
                        if (noop) return [Same()];
                        return [Of(T0, keep ? d.Select(_ => SymDim.One).ToArray() : [])];
                    }
                    var set = axes.Select(a => Normalize(a, d.Length)).ToHashSet();
                    return [Of(T0, keep ? d.Select((v, i) => set.Contains(i) ? SymDim.One : v).ToArray() : d.Where((_, i) => !set.Contains(i)).ToArray())];
                }
            case "Flatten":
                {
                    if (xs is not { } d) return [UnknownDims(T0, 2)];
                    var axis = (int)Normalize(node.GetInt("axis", 1), d.Length);
                    return [Of(T0, [Product(d[..axis]), Product(d[axis..])])];
                }
            case "Unsqueeze":
                {
                    var axes = node.GetInts("axes") ?? ConstantInts(node, 1, all);
                    if (xs is not { } d || axes is null) return [TypeOnly(T0)];
                    var r = d.Length + axes.Length;
                    var set = axes.Select(a => Normalize(a, r)).ToHashSet();
                    var res = new SymDim[r];
                    for (int i = 0, j = 0; i < r; i++) res[i] = set.Contains(i) ? SymDim.One : d[j++];
                    return [Of(T0, res)];
                }
            case "Squeeze":
                {
                    var axes = node.GetInts("axes") ?? ConstantInts(node, 1, all);
                    if (xs is not { } d) return [TypeOnly(T0)];
                    if (axes is null)
                        return [d.All(v => v.Value.HasValue) ? Of(T0, d.Where(v => !v.IsOne).ToArray()) : TypeOnly(T0)];
                    var set = axes.Select(a => Normalize(a, d.Length)).ToHashSet();
                    return [Of(T0, d.Where((_, i) => !set.Contains(i)).ToArray())];
                }
            case "Reshape":
                {
                    // The target shape may be partly symbolic (computed from Shape nodes); such entries are sizes.
                    var shape = value(1);
                    if (shape is null)
                        return [input(1)?.Dims is [long n] ? UnknownDims(T0, (int)n) : TypeOnly(T0)];
                    var allowZero = node.GetInt("allowzero", 0) != 0;
                    var d = xs;
                    var res = new SymDim[shape.Length];
                    for (var i = 0; i < shape.Length; i++)
                        res[i] = shape[i].Value switch
                        {
                            0 when !allowZero => d is not null && i < d.Length ? d[i] : SymDim.Unknown,
                            -1 => SymDim.Unknown,
                            _ => shape[i],
                        };
                    var minus = Array.FindIndex(shape, v => v.Value == -1);
                    if (minus >= 0 && d is not null)
                    {
                        // -1 is the input size over the other output dims: static when every dim is, and the input's
                        // symbolic dim itself when both sides share all other factors (e.g. [b, s, 12, 32] -> [b, -1, 384]).
                        var rest = res.Where((_, i) => i != minus).ToList();
                        var remaining = d.ToList();
                        foreach (var r in rest.Where(r => r.Value is null).ToList())
                        {
                            var k = remaining.FindIndex(q => q.SameAs(r));
                            if (k < 0) { remaining = null; break; }
                            remaining.RemoveAt(k);
                            rest.Remove(r);
                        }
                        if (remaining is not null)
                        {
                            var known = rest.Aggregate(1L, (a, b) => a * b.Value!.Value);
                            var symbolic = remaining.Where(q => q.Value is null).ToList();
                            var staticPart = remaining.Where(q => q.Value is not null).Aggregate(1L, (a, b) => a * b.Value!.Value);
                            if (known != 0 && symbolic.Count == 0 && staticPart % known == 0) res[minus] = SymDim.Of(staticPart / known);
                            else if (known != 0 && symbolic.Count == 1 && staticPart == known) res[minus] = symbolic[0];
                        }
                    }
                    return [Of(T0, res)];
                }
            case "Concat":
                {
                    var axis = node.GetInt("axis", 0);
                    var parts = Enumerable.Range(0, node.Input.Count).Select(i => Sym(input(i))).ToArray();
                    if (parts.Any(p => p is null))
                        return [parts.FirstOrDefault(p => p is not null) is { } known ? UnknownDims(T0, known.Length) : TypeOnly(T0)];
                    var r = parts[0]!.Length;
                    var ax = (int)Normalize(axis, r);
                    var res = new SymDim[r];
                    for (var i = 0; i < r; i++)
                    {
                        if (i == ax) continue;
                        // All parts agree off the axis: any static size among them is the size.
                        res[i] = parts.Select(p => p![i]).FirstOrDefault(v => v.Value is not null, parts[0]![i]);
                    }
                    long? sum = 0;
                    foreach (var p in parts) sum = sum is null || p![ax].Value is null ? null : sum + p[ax].Value;
                    res[ax] = sum is { } s ? SymDim.Of(s) : parts.Length == 1 ? parts[0]![ax] : SymDim.Unknown;
                    return [Of(T0, res)];
                }
            case "Expand":
                {
                    var shape = value(1);
                    if (shape is null || xs is null)
                        return [input(1)?.Dims is [long n] && xs is { } xd ? UnknownDims(T0, (int)Math.Max(n, xd.Length)) : TypeOnly(T0)];
                    return [Of(T0, BroadcastDims(xs, shape))];
                }
            case "Slice": return [Of(T0, SliceDims(node, xs, value))];
            case "Split": return SplitDims(node, xs, all).Select(d => (TensorTypeInfo?)Of(T0, d)).ToArray();
            case "Tile":
                {
                    if (xs is not { } td) return [TypeOnly(T0)];
                    var reps = ConstantInts(node, 1, all);
                    if (reps is null || reps.Length != td.Length) return [UnknownDims(T0, td.Length)];
                    return [Of(T0, td.Select((v, i) => reps[i] == 1 ? v : v.Value is { } n ? SymDim.Of(n * reps[i]) : SymDim.Unknown).ToArray())];
                }
            case "Pad":
                return [xs is { } pd ? UnknownDims(T0, pd.Length) : TypeOnly(T0)];
            case "GatherElements": return [Of(T0, Sym(input(1)))];
            case "ScatterND" or "ScatterElements": return [Same()];
            case "OneHot": return [new(input(2)?.ElementType ?? DataType.Float, null)];
            case "Conv" or "ConvTranspose" or "MaxPool" or "AveragePool" or "LpPool" or "GlobalAveragePool" or "GlobalMaxPool" or "GlobalLpPool":
                {
                    // Rank is kept; batch stays, channels are the weight's (Conv/ConvTranspose) or the input's.
                    var w = input(1);
                    var rank = xs?.Length ?? (node.OpType is "Conv" or "ConvTranspose" ? w?.Rank : null) ?? node.GetInts("kernel_shape")?.Length + 2;
                    if (rank is not { } rk) return node.Output.Select(_ => (TensorTypeInfo?)TypeOnly(T0)).ToArray();
                    var dims = Enumerable.Repeat(SymDim.Unknown, rk).ToArray();
                    if (xs is not null) dims[0] = xs[0];
                    if (node.OpType == "Conv" && w?.Dims is { } wd && wd[0] is { } mOut) dims[1] = SymDim.Of(mOut);
                    else if (node.OpType == "ConvTranspose" && w?.Dims is { } wt && wt[1] is { } mg) dims[1] = SymDim.Of(mg * node.GetInt("group", 1));
                    else if (node.OpType is not ("Conv" or "ConvTranspose") && xs is not null) dims[1] = xs[1];
                    if (node.OpType.StartsWith("Global", StringComparison.Ordinal))
                        for (var i = 2; i < rk; i++) dims[i] = SymDim.One;
                    else if (node.OpType is "Conv" or "MaxPool" or "AveragePool" && xs is not null && node.GetInt("ceil_mode", 0) == 0)
                    {
                        // Static spatial sizes when the input's are: floor((L + pads − d·(K − 1) − 1) / s) + 1.
                        var kernel = node.GetInts("kernel_shape") ?? (node.OpType == "Conv" && w?.Dims is { } kw && kw.Skip(2).All(v => v.HasValue) ? kw.Skip(2).Select(v => v!.Value).ToArray() : null);
                        if (kernel is not null && kernel.Length == rk - 2)
                        {
                            var geo = Rules.WindowGeometry.Of(node, kernel);
                            var xdims = xs.Select(d => d.Value).ToArray();
                            if (geo.StaticPads(xdims) is { } pads)
                                for (var i = 0; i < kernel.Length; i++)
                                    if (xdims[i + 2] is { } l)
                                        dims[i + 2] = SymDim.Of((l + pads[i] + pads[i + kernel.Length] - geo.Dilations[i] * (kernel[i] - 1) - 1) / geo.Strides[i] + 1);
                        }
                    }
                    var result = Of(T0, dims);
                    return node.OpType == "MaxPool" ? [result, Of(DataType.Int64, dims)] : [result];
                }
            case "BatchNormalization":
                return [Same(), input(3) is { } rm ? Of(rm.ElementType, Sym(rm)) : null, input(4) is { } rv ? Of(rv.ElementType, Sym(rv)) : null];
            case "HardSwish": return [Same()];
            case "GatherND" or "Resize" or "TopK" or "Einsum":
                return [TypeOnly(T0)];
            default:
                return node.Output.Select(_ => (TensorTypeInfo?)(T0 == DataType.Undefined ? null : TypeOnly(T0))).ToArray();
        }
    }

    // Slice-10+: starts/ends/axes/steps as inputs; dims are exact when all are constant and the sliced dims known.
    private static SymDim[]? SliceDims(NodeProto node, SymDim[]? d, Func<int, SymDim[]?> value)
    {
        if (d is null) return null;
        long[]? Ints(int i) => value(i) is { } v && v.All(e => e.Value is not null) ? v.Select(e => e.Value!.Value).ToArray() : null;
        var res = d.ToArray();
        var starts = Ints(1);
        var ends = value(2);
        var axes = node.Input.Count > 3 && node.Input[3].Length > 0 ? Ints(3) : Enumerable.Range(0, starts?.Length ?? 0).Select(i => (long)i).ToArray();
        var steps = node.Input.Count > 4 && node.Input[4].Length > 0 ? Ints(4) : starts?.Select(_ => 1L).ToArray();
        if (starts is null || ends is null || axes is null || steps is null || ends.Length != starts.Length)
        {
            if (axes is not null && node.Input.Count > 3 && node.Input[3].Length > 0)
                foreach (var a in axes) res[Normalize(a, d.Length)] = SymDim.Unknown;
            else
                return d.Select(_ => SymDim.Unknown).ToArray();
            return res;
        }
        for (var k = 0; k < axes.Length; k++)
        {
            var ax = (int)Normalize(axes[k], d.Length);
            long step = steps[k], s = starts[k];
            if (ends[k].Value is not { } e)
            {
                // x[..., :n] with n a size read from another tensor (e.g. position ids cut to the sequence length):
                // the result has that size; a graph where n exceeded the dim would not line up downstream.
                res[ax] = step == 1 && s == 0 ? ends[k] : SymDim.Unknown;
                continue;
            }
            if (d[ax].Value is not { } n || step == 0)
            {
                // The whole of a symbolic dim (start 0, end past any size, step 1) keeps its symbol.
                res[ax] = step == 1 && s == 0 && e >= int.MaxValue ? d[ax] : SymDim.Unknown;
                continue;
            }
            if (n == 0) { res[ax] = SymDim.Of(0); continue; }
            s = s < 0 ? s + n : s;
            e = e < 0 ? e + n : e;
            if (step > 0) { s = Math.Clamp(s, 0, n); e = Math.Clamp(e, 0, n); res[ax] = SymDim.Of(e > s ? (e - s + step - 1) / step : 0); }
            else { s = Math.Clamp(s, 0, n - 1); e = Math.Clamp(e, -1, n - 1); res[ax] = SymDim.Of(s > e ? (s - e - step - 1) / -step : 0); }
        }
        return res;
    }

    private static SymDim[]?[] SplitDims(NodeProto node, SymDim[]? d, ConstantTable all)
    {
        var count = node.Output.Count;
        var result = new SymDim[]?[count];
        if (d is null) return result;
        var axis = (int)Normalize(node.GetInt("axis", 0), d.Length);
        var split = node.GetInts("split") ?? ConstantInts(node, 1, all);
        for (var i = 0; i < count; i++)
        {
            var r = d.ToArray();
            if (split is not null && split.Length == count) r[axis] = SymDim.Of(split[i]);
            else if (d[axis].Value is { } n && split is null)
            {
                // Equal parts; the last one is smaller when the size does not divide (opset 18).
                var part = (n + count - 1) / count;
                r[axis] = SymDim.Of(i < count - 1 ? part : n - part * (count - 1));
            }
            else r[axis] = count == 1 ? d[axis] : SymDim.Unknown;
            result[i] = r;
        }
        return result;
    }

    internal static long[]? ConstantInts(NodeProto node, int inputIndex, ConstantTable constants) =>
        inputIndex < node.Input.Count && constants.TryGet(node.Input[inputIndex], out var v) ? v : null;

    private static long Normalize(long axis, int rank) => axis < 0 ? axis + rank : axis;

    // Static product; a single symbolic factor among static ones of size 1 keeps its symbol.
    private static SymDim Product(IEnumerable<SymDim> dims)
    {
        long p = 1;
        SymDim? symbolic = null;
        foreach (var d in dims)
        {
            if (d.Value is { } v) { p *= v; continue; }
            if (symbolic is not null) return SymDim.Unknown;
            symbolic = d;
        }
        if (symbolic is null) return SymDim.Of(p);
        return p == 1 ? symbolic.Value : SymDim.Unknown;
    }

    // Numpy broadcasting of every present input of a node (Where's condition included).
    private static SymDim[]? BroadcastAll(NodeProto node, Func<int, TensorTypeInfo?> input)
    {
        SymDim[]? dims = null;
        for (var i = 0; i < node.Input.Count; i++)
        {
            if (node.Input[i].Length == 0) continue;
            var d = Sym(input(i));
            if (d is null) return null;
            dims = dims is null ? d : BroadcastDims(dims, d);
        }
        return dims;
    }

    /// <summary>Numpy broadcasting of two shapes: a side of size 1 takes the other; equal symbols stay.</summary>
    internal static SymDim[] BroadcastDims(SymDim[] a, SymDim[] b)
    {
        var r = Math.Max(a.Length, b.Length);
        var res = new SymDim[r];
        for (var i = 0; i < r; i++)
        {
            var da = i - (r - a.Length) >= 0 ? a[i - (r - a.Length)] : SymDim.One;
            var db = i - (r - b.Length) >= 0 ? b[i - (r - b.Length)] : SymDim.One;
            res[i] = da.IsOne ? db
                : db.IsOne ? da
                : da.Value is not null ? da   // a static size other than 1 is the result (b is it or 1)
                : db.Value is not null ? db
                : da.SameAs(db) ? da
                : SymDim.Unknown;
        }
        return res;
    }
}

/// <summary>Values of small constant int64 tensors of a graph (Constant nodes and initializers), for shape reasoning.</summary>
internal sealed class ConstantTable
{
    private readonly Dictionary<string, long[]> _values = new(StringComparer.Ordinal);

    public ConstantTable(GraphProto graph)
    {
        foreach (var t in graph.Initializer)
            if (IsSmallInteger(t))
                _values[t.Name] = ToInt64(t);
        foreach (var n in graph.Node)
            if (n.OpType == "Constant" && n.Find("value")?.T is { } t && IsSmallInteger(t))
                _values[n.Output[0]] = ToInt64(t);
            else if (n.OpType == "Constant" && n.Find("value_ints") is { } a)
                _values[n.Output[0]] = a.Ints.ToArray();
    }

    // Bool constants (e.g. Dropout's training_mode) are kept as 0/1.
    private static bool IsSmallInteger(TensorProto t) =>
        (DataType)t.DataType is DataType.Int64 or DataType.Int32 or DataType.Bool && TensorProtos.ElementCount(t) <= 64;

    private static long[] ToInt64(TensorProto t)
    {
        if ((DataType)t.DataType != DataType.Bool) return TensorProtos.ToInt64Array(t);
        if (t.RawData.Length > 0) return t.RawData.Select(b => (long)(b != 0 ? 1 : 0)).ToArray();
        return t.Int32Data.Select(v => (long)(v != 0 ? 1 : 0)).ToArray();
    }

    public bool TryGet(string name, out long[] values)
    {
        if (_values.TryGetValue(name, out var v)) { values = v; return true; }
        values = [];
        return false;
    }
}
