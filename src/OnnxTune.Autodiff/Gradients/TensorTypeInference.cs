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
}

/// <summary>
/// A small forward pass that propagates element types (always) and shapes/ranks (for common ops) through a graph.
/// Autodiff uses it to prune integer paths and to decide broadcast reductions statically when it can; where a
/// shape is unknown the rules fall back to runtime shape ops.
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
                info[v.Name] = new(ValueInfos.ElemType(v), ValueInfos.Dims(v));

        foreach (var node in orderedNodes)
        {
            TensorTypeInfo? In(int i) => i < node.Input.Count && node.Input[i].Length > 0 && info.TryGetValue(node.Input[i], out var x) ? x : null;
            var outs = Infer(node, In, constants);
            for (var i = 0; i < node.Output.Count && i < outs.Length; i++)
            {
                if (outs[i] is null || node.Output[i].Length == 0) continue;
                // Value infos from the exporter win when they say more.
                if (info.TryGetValue(node.Output[i], out var existing) && existing.Dims is not null && existing.ElementType != DataType.Undefined)
                    continue;
                info[node.Output[i]] = outs[i]!;
            }
        }
        return info;
    }

    private static TensorTypeInfo?[] Infer(NodeProto node, Func<int, TensorTypeInfo?> input, ConstantTable all)
    {
        var x = input(0);
        DataType T0 = x?.ElementType ?? DataType.Undefined;
        TensorTypeInfo Same() => new(T0, x?.Dims);
        TensorTypeInfo TypeOnly(DataType t) => new(t, null);
        switch (node.OpType)
        {
            case "Shape":
                {
                    if (x?.Rank is not { } r) return [new(DataType.Int64, [null])];
                    var start = (int)Math.Clamp(Normalize(node.GetInt("start", 0), r), 0, r);
                    var end = (int)Math.Clamp(Normalize(node.GetInt("end", r), r), 0, r);
                    return [new(DataType.Int64, [Math.Max(0, end - start)])];
                }
            case "Size": return [new(DataType.Int64, [])];
            case "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" or "IsNaN" or "IsInf":
                return [new(DataType.Bool, Broadcast(x, input(1)))];
            case "ArgMax" or "ArgMin" or "NonZero": return [TypeOnly(DataType.Int64)];
            case "Cast": return [new((DataType)node.GetInt("to", 1), x?.Dims)];
            case "CastLike": return [new(input(1)?.ElementType ?? DataType.Undefined, x?.Dims)];
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
                    var shapeLen = input(0)?.Dims is { Length: 1 } d0 ? d0[0] : null;
                    return [new(dt, shapeLen is { } r ? new long?[r] : null)];
                }
            case "Range": return [new(T0, [null])];
            case "SoftmaxCrossEntropyLoss":
                return [new(T0, node.GetString("reduction", "mean") == "none" ? input(1)?.Dims : []), Same()];
            case "Dropout": return [Same(), new(DataType.Bool, x?.Dims)];
            case "LayerNormalization":
                {
                    var stash = (DataType)node.GetInt("stash_type", 1);
                    if (x?.Dims is not { } d) return [Same(), TypeOnly(stash), TypeOnly(stash)];
                    var axis = (int)Normalize(node.GetInt("axis", -1), d.Length);
                    var reduced = d.Select((v, i) => i < axis ? v : 1).ToArray();
                    return [Same(), new(stash, reduced), new(stash, reduced)];
                }
            case "Add" or "Sub" or "Mul" or "Div" or "Pow" or "PRelu" or "Max" or "Min" or "Sum" or "Mean":
                {
                    long?[]? dims = x?.Dims;
                    for (var i = 1; i < node.Input.Count; i++) dims = Broadcast(dims is null ? null : new(T0, dims), input(i));
                    return [new(T0, dims)];
                }
            case "Where": return [new(input(1)?.ElementType ?? DataType.Undefined, BroadcastDims(x?.Dims, Broadcast(input(1), input(2))))];
            case "Relu" or "LeakyRelu" or "Sigmoid" or "Tanh" or "Exp" or "Log" or "Sqrt" or "Neg" or "Abs" or "Erf" or "Identity"
                or "Softmax" or "LogSoftmax" or "Gelu" or "Softplus" or "Elu" or "Selu" or "HardSigmoid" or "Sign" or "Reciprocal"
                or "Clip" or "Floor" or "Ceil" or "Round" or "Sin" or "Cos" or "BatchNormalization" or "InstanceNormalization":
                return [Same()];
            case "MatMul":
                {
                    var a = x?.Dims; var b = input(1)?.Dims;
                    if (a is null || b is null || a.Length < 1 || b.Length < 1) return [TypeOnly(T0)];
                    if (a.Length == 1 || b.Length == 1) return [TypeOnly(T0)];
                    var batchA = a[..^2]; var batchB = b[..^2];
                    var batch = BroadcastDims(batchA, batchB);
                    return [new(T0, batch is null ? null : [.. batch, a[^2], b[^1]])];
                }
            case "Gemm":
                {
                    var a = x?.Dims; var b = input(1)?.Dims;
                    if (a is not { Length: 2 } || b is not { Length: 2 }) return [new(T0, [null, null])];
                    var m = node.GetInt("transA", 0) != 0 ? a[1] : a[0];
                    var n = node.GetInt("transB", 0) != 0 ? b[0] : b[1];
                    return [new(T0, [m, n])];
                }
            case "Transpose":
                {
                    if (x?.Dims is not { } d) return [TypeOnly(T0)];
                    var perm = node.GetInts("perm") ?? Enumerable.Range(0, d.Length).Reverse().Select(i => (long)i).ToArray();
                    return [new(T0, perm.Select(p => d[p]).ToArray())];
                }
            case "Gather":
                {
                    var data = x?.Dims; var idx = input(1)?.Dims;
                    if (data is null || idx is null) return [TypeOnly(T0)];
                    var axis = (int)Normalize(node.GetInt("axis", 0), data.Length);
                    return [new(T0, [.. data[..axis], .. idx, .. data[(axis + 1)..]])];
                }
            case "ReduceMean" or "ReduceSum" or "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceL2" or "ReduceSumSquare" or "ReduceLogSumExp":
                {
                    if (x?.Dims is not { } d) return [TypeOnly(T0)];
                    var keep = node.GetInt("keepdims", 1) != 0;
                    long[]? axes = node.GetInts("axes") ?? ConstantInts(node, 1, all);
                    if (axes is null)
                    {
                        var noop = node.GetInt("noop_with_empty_axes", 0) != 0;
                        if (node.Input.Count > 1 && node.Input[1].Length > 0) return [keep ? new(T0, new long?[d.Length]) : TypeOnly(T0)];
                        if (noop) return [Same()];
                        return [new(T0, keep ? d.Select(_ => (long?)1).ToArray() : [])];
                    }
                    var set = axes.Select(a => Normalize(a, d.Length)).ToHashSet();
                    return [new(T0, keep ? d.Select((v, i) => set.Contains(i) ? 1 : v).ToArray() : d.Where((_, i) => !set.Contains(i)).ToArray())];
                }
            case "Flatten":
                {
                    if (x?.Dims is not { } d) return [new(T0, [null, null])];
                    var axis = (int)Normalize(node.GetInt("axis", 1), d.Length);
                    return [new(T0, [Product(d[..axis]), Product(d[axis..])])];
                }
            case "Unsqueeze":
                {
                    var axes = node.GetInts("axes") ?? ConstantInts(node, 1, all);
                    if (x?.Dims is not { } d || axes is null) return [TypeOnly(T0)];
                    var r = d.Length + axes.Length;
                    var set = axes.Select(a => Normalize(a, r)).ToHashSet();
                    var res = new long?[r];
                    for (int i = 0, j = 0; i < r; i++) res[i] = set.Contains(i) ? 1 : d[j++];
                    return [new(T0, res)];
                }
            case "Squeeze":
                {
                    var axes = node.GetInts("axes") ?? ConstantInts(node, 1, all);
                    if (x?.Dims is not { } d) return [TypeOnly(T0)];
                    if (axes is null)
                        return [d.All(v => v.HasValue) ? new(T0, d.Where(v => v != 1).ToArray()) : TypeOnly(T0)];
                    var set = axes.Select(a => Normalize(a, d.Length)).ToHashSet();
                    return [new(T0, d.Where((_, i) => !set.Contains(i)).ToArray())];
                }
            case "Reshape":
                {
                    var shape = ConstantInts(node, 1, all);
                    if (shape is null)
                        return [new(T0, input(1)?.Dims is [long n] ? new long?[n] : null)];
                    var d = x?.Dims;
                    var res = new long?[shape.Length];
                    for (var i = 0; i < shape.Length; i++)
                        res[i] = shape[i] switch { 0 => d is not null && i < d.Length ? d[i] : null, -1 => null, var v => v };
                    if (d is not null && d.All(v => v.HasValue) && res.Count(v => v is null) == 1)
                    {
                        var total = Product(d);
                        var known = res.Where(v => v.HasValue).Aggregate(1L, (a, b) => a * b!.Value);
                        var idx = Array.IndexOf(res, null);
                        if (total is { } tt && known != 0) res[idx] = tt / known;
                    }
                    return [new(T0, res)];
                }
            case "Concat":
                {
                    var axis = node.GetInt("axis", 0);
                    var parts = Enumerable.Range(0, node.Input.Count).Select(input).ToArray();
                    if (parts.Any(p => p?.Dims is null))
                        return [parts.FirstOrDefault(p => p?.Dims is not null) is { } known ? new(T0, new long?[known.Dims!.Length]) : TypeOnly(T0)];
                    var r = parts[0]!.Dims!.Length;
                    var ax = (int)Normalize(axis, r);
                    var res = parts[0]!.Dims!.ToArray();
                    long? sum = 0;
                    foreach (var p in parts) sum = sum is null || p!.Dims![ax] is null ? null : sum + p.Dims[ax];
                    res[ax] = sum;
                    return [new(T0, res)];
                }
            case "Expand":
                {
                    var shape = ConstantInts(node, 1, all);
                    if (shape is null || x?.Dims is null) return [new(T0, input(1)?.Dims is [long n] && x?.Dims is { } xd ? new long?[Math.Max(n, xd.Length)] : null)];
                    return [new(T0, BroadcastDims(x.Dims, shape.Select(v => (long?)v).ToArray()))];
                }
            case "Slice": return [new(T0, SliceDims(node, x?.Dims, all))];
            case "Split": return SplitDims(node, x?.Dims, all).Select(d => (TensorTypeInfo?)new(T0, d)).ToArray();
            case "Tile" or "Pad":
                return [new(T0, x?.Dims is { } td ? new long?[td.Length] : null)];
            case "GatherElements": return [new(T0, input(1)?.Dims)];
            case "ScatterND" or "ScatterElements": return [Same()];
            case "OneHot": return [new(input(2)?.ElementType ?? DataType.Float, null)];
            case "GatherND" or "Resize" or "TopK" or "Einsum":
                return [TypeOnly(T0)];
            default:
                return node.Output.Select(_ => (TensorTypeInfo?)(T0 == DataType.Undefined ? null : TypeOnly(T0))).ToArray();
        }
    }

    // Slice-10+: starts/ends/axes/steps as inputs; dims are exact when all are constant and the sliced dims known.
    private static long?[]? SliceDims(NodeProto node, long?[]? d, ConstantTable all)
    {
        if (d is null) return null;
        var res = d.ToArray();
        var starts = ConstantInts(node, 1, all);
        var ends = ConstantInts(node, 2, all);
        var axes = node.Input.Count > 3 && node.Input[3].Length > 0 ? ConstantInts(node, 3, all) : Enumerable.Range(0, starts?.Length ?? 0).Select(i => (long)i).ToArray();
        var steps = node.Input.Count > 4 && node.Input[4].Length > 0 ? ConstantInts(node, 4, all) : starts?.Select(_ => 1L).ToArray();
        if (starts is null || ends is null || axes is null || steps is null)
        {
            if (axes is not null && node.Input.Count > 3 && node.Input[3].Length > 0)
                foreach (var a in axes) res[Normalize(a, d.Length)] = null;
            else
                return new long?[d.Length];
            return res;
        }
        for (var k = 0; k < axes.Length; k++)
        {
            var ax = (int)Normalize(axes[k], d.Length);
            if (d[ax] is not { } n || steps[k] == 0) { res[ax] = null; continue; }
            if (n == 0) { res[ax] = 0; continue; }
            long step = steps[k], s = starts[k], e = ends[k];
            s = s < 0 ? s + n : s;
            e = e < 0 ? e + n : e;
            if (step > 0) { s = Math.Clamp(s, 0, n); e = Math.Clamp(e, 0, n); res[ax] = e > s ? (e - s + step - 1) / step : 0; }
            else { s = Math.Clamp(s, 0, n - 1); e = Math.Clamp(e, -1, n - 1); res[ax] = s > e ? (s - e - step - 1) / -step : 0; }
        }
        return res;
    }

    private static long?[]?[] SplitDims(NodeProto node, long?[]? d, ConstantTable all)
    {
        var count = node.Output.Count;
        var result = new long?[]?[count];
        if (d is null) return result;
        var axis = (int)Normalize(node.GetInt("axis", 0), d.Length);
        var split = node.GetInts("split") ?? ConstantInts(node, 1, all);
        for (var i = 0; i < count; i++)
        {
            var r = d.ToArray();
            if (split is not null && split.Length == count) r[axis] = split[i];
            else if (d[axis] is { } n && split is null)
            {
                // Equal parts; the last one is smaller when the size does not divide (opset 18).
                var part = (n + count - 1) / count;
                r[axis] = i < count - 1 ? part : n - part * (count - 1);
            }
            else r[axis] = null;
            result[i] = r;
        }
        return result;
    }

    internal static long[]? ConstantInts(NodeProto node, int inputIndex, ConstantTable constants) =>
        inputIndex < node.Input.Count && constants.TryGet(node.Input[inputIndex], out var v) ? v : null;

    private static long Normalize(long axis, int rank) => axis < 0 ? axis + rank : axis;

    private static long? Product(IEnumerable<long?> dims)
    {
        long p = 1;
        foreach (var d in dims) { if (d is null) return null; p *= d.Value; }
        return p;
    }

    private static long?[]? Broadcast(TensorTypeInfo? a, TensorTypeInfo? b) =>
        a?.Dims is null || b?.Dims is null ? null : BroadcastDims(a.Dims, b.Dims);

    internal static long?[]? BroadcastDims(long?[]? a, long?[]? b)
    {
        if (a is null || b is null) return null;
        var r = Math.Max(a.Length, b.Length);
        var res = new long?[r];
        for (var i = 0; i < r; i++)
        {
            var da = i - (r - a.Length) >= 0 ? a[i - (r - a.Length)] : 1;
            var db = i - (r - b.Length) >= 0 ? b[i - (r - b.Length)] : 1;
            res[i] = da == 1 ? db : db == 1 ? da : da == db ? da : (da ?? db);
            if (da is null && db is null) res[i] = null;
            else if (da is null && db == 1) res[i] = null;
            else if (db is null && da == 1) res[i] = null;
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
