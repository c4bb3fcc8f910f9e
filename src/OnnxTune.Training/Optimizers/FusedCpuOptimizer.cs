using System.Numerics;
using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Training.Optimizers;

/// <summary>
/// The update of OnnxTune's optimizer graph (AdamW or SGD, optional clip_grad_norm_) as one fused pass over the
/// parameters' CPU buffers: each element's parameter, gradient and state are read once and written once, where the
/// graph runs ~14 element-wise operators per parameter, each a full pass over memory. It performs the same float
/// operations in the same order as the graph (scalar factors in float64, then cast), so the two agree to the last bit
/// apart from the clip norm's summation order. It updates in place (the graph needs ping-pong buffers because an ORT
/// run may not read and write one buffer; a separate destination would cost a read-for-ownership of every written
/// line). Work is split by element count across a fixed set of threads created once; a step allocates nothing.
/// </summary>
internal sealed unsafe class FusedCpuOptimizer : IDisposable
{
    private const int ChunkElements = 1 << 14;
    private const long ParallelThreshold = 1 << 18;

    private readonly OptimizerSpec _spec;
    private readonly SlotPointers[] _slots;
    private readonly Chunk[][] _partitions;
    private readonly Thread[] _workers;
    private readonly SemaphoreSlim[] _start;
    private readonly SemaphoreSlim[] _done;
    private volatile bool _stopping;
    private volatile Exception? _workerFailure;
    private int _pp, _gp;
    private readonly double[] _groupScales;
    private readonly int[] _slotGroup;
    private readonly Scalars<float>[] _f;
    private readonly Scalars<double>[] _d;
    private bool _firstStep;

    /// <param name="spec">The optimizer settings.</param>
    /// <param name="slots">The parameters, gradients and states.</param>
    /// <param name="threads">Threads to split the update over.</param>
    /// <param name="learningRateScales">Per-slot factor on the learning rate (PyTorch parameter groups); null: 1 for all.</param>
    public FusedCpuOptimizer(OptimizerSpec spec, IReadOnlyList<ParameterSlot> slots, int threads, IReadOnlyList<double>? learningRateScales = null)
    {
        _spec = spec;
        _slots = slots.Select(s => new SlotPointers(s)).ToArray();
        if (learningRateScales is not null && learningRateScales.Count != slots.Count)
            throw new ArgumentException($"{learningRateScales.Count} learning-rate scales for {slots.Count} parameters.", nameof(learningRateScales));
        _groupScales = (learningRateScales ?? []).Append(1.0).Distinct().ToArray();
        _slotGroup = Enumerable.Range(0, slots.Count).Select(i => Array.IndexOf(_groupScales, learningRateScales?[i] ?? 1.0)).ToArray();
        _f = new Scalars<float>[_groupScales.Length];
        _d = new Scalars<double>[_groupScales.Length];
        var total = _slots.Sum(s => s.Length);
        var parts = total >= ParallelThreshold ? Math.Clamp(threads, 1, 8) : 1;
        _partitions = Partition(_slots, parts, total);
        _workers = new Thread[parts - 1];
        _start = new SemaphoreSlim[parts - 1];
        _done = new SemaphoreSlim[parts - 1];
        for (var w = 0; w < _workers.Length; w++)
        {
            _start[w] = new SemaphoreSlim(0);
            _done[w] = new SemaphoreSlim(0);
            var index = w;
            _workers[w] = new Thread(() => WorkerLoop(index)) { IsBackground = true, Name = $"OnnxTune optimizer {w + 1}" };
            _workers[w].Start();
        }
    }

    /// <summary>Threads the update runs on (1 below <see cref="ParallelThreshold"/> elements).</summary>
    public int Threads => _partitions.Length;

    /// <summary>Updates parameters and state of parity <paramref name="pp"/> in place from the gradients of parity <paramref name="gp"/>.</summary>
    public void Step(int pp, int gp, float learningRate, long step)
    {
        _pp = pp;
        _gp = gp;
        _firstStep = step == 1;
        var clip = _spec.MaxGradNorm is { } maxNorm ? ClipCoefficient(maxNorm, gp) : (float?)null;
        for (var group = 0; group < _groupScales.Length; group++)
        {
            // A scale of 1 keeps the learning rate's float value, so unscaled updates stay bit-identical to the graph's.
            var lrFloat = _groupScales[group] == 1.0 ? learningRate : (float)(learningRate * _groupScales[group]);
            double lr = lrFloat;
            if (_spec.Kind == OptimizerKind.AdamW)
            {
                var decay = 1.0 - lr * _spec.WeightDecay;
                var stepSize = lr / (1.0 - Math.Pow(_spec.Beta1, step));
                var bc2Sqrt = Math.Sqrt(1.0 - Math.Pow(_spec.Beta2, step));
                _f[group] = new((float)decay, (float)(1 - _spec.Beta1), (float)_spec.Beta2, (float)(1 - _spec.Beta2), (float)stepSize, (float)bc2Sqrt, (float)_spec.Epsilon, clip ?? 1f, clip is not null, _spec.WeightDecay != 0);
                _d[group] = new(decay, 1 - _spec.Beta1, _spec.Beta2, 1 - _spec.Beta2, stepSize, bc2Sqrt, _spec.Epsilon, clip ?? 1f, clip is not null, _spec.WeightDecay != 0);
            }
            else
            {
                // SGD reuses the fields: A = weight decay, B = momentum, C = 1 - dampening, D = learning rate.
                _f[group] = new((float)_spec.WeightDecay, (float)_spec.Momentum, (float)(1 - _spec.Dampening), lrFloat, 0, 0, 0, clip ?? 1f, clip is not null, _spec.WeightDecay != 0);
                _d[group] = new(_spec.WeightDecay, _spec.Momentum, 1 - _spec.Dampening, lr, 0, 0, 0, clip ?? 1f, clip is not null, _spec.WeightDecay != 0);
            }
        }
        for (var w = 0; w < _workers.Length; w++) _start[w].Release();
        try
        {
            Run(_partitions[0]);
        }
        finally
        {
            for (var w = 0; w < _workers.Length; w++) _done[w].Wait();
        }
        if (_workerFailure is { } failure)
        {
            _workerFailure = null;
            throw new InvalidOperationException("The fused optimizer's worker thread failed; the parameters of this step may be partly updated.", failure);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        for (var w = 0; w < _workers.Length; w++) _start[w].Release();
        foreach (var t in _workers) t.Join();
        foreach (var s in _start) s.Dispose();
        foreach (var s in _done) s.Dispose();
    }

    private void WorkerLoop(int w)
    {
        while (true)
        {
            _start[w].Wait();
            if (_stopping) return;
            try
            {
                Run(_partitions[w + 1]);
            }
            catch (Exception e)
            {
                _workerFailure = e;
            }
            finally
            {
                _done[w].Release();
            }
        }
    }

    // torch.nn.utils.clip_grad_norm_ as the graph computes it: per-tensor sums of squares in float, summed in float.
    private float ClipCoefficient(double maxNorm, int gp)
    {
        var sum = 0f;
        foreach (var s in _slots)
            sum += s.IsDouble
                ? (float)TensorPrimitives.SumOfSquares(new ReadOnlySpan<double>((double*)s.Gradients[gp], checked((int)s.Length)))
                : TensorPrimitives.SumOfSquares(new ReadOnlySpan<float>((float*)s.Gradients[gp], checked((int)s.Length)));
        var total = MathF.Sqrt(sum);
        var coef = (float)maxNorm / (total + (float)1e-6);
        return MathF.Min(coef, 1f);
    }

    private void Run(Chunk[] chunks)
    {
        int pp = _pp, gp = _gp, next = pp;
        var adam = _spec.Kind == OptimizerKind.AdamW;
        foreach (var c in chunks)
        {
            var s = _slots[c.Slot];
            var group = _slotGroup[c.Slot];
            if (s.IsDouble)
            {
                var size = sizeof(double) * c.Start;
                if (adam)
                    AdamW((double*)(s.Values[pp] + size), (double*)(s.Gradients[gp] + size), (double*)(s.State0[pp] + size), (double*)(s.State1[pp] + size),
                        (double*)(s.Values[next] + size), (double*)(s.State0[next] + size), (double*)(s.State1[next] + size), c.Length, _d[group]);
                else
                    Sgd((double*)(s.Values[pp] + size), (double*)(s.Gradients[gp] + size), s.HasState ? (double*)(s.State0[pp] + size) : null,
                        (double*)(s.Values[next] + size), s.HasState ? (double*)(s.State0[next] + size) : null, c.Length, _d[group]);
            }
            else
            {
                var size = sizeof(float) * c.Start;
                if (adam)
                    AdamW((float*)(s.Values[pp] + size), (float*)(s.Gradients[gp] + size), (float*)(s.State0[pp] + size), (float*)(s.State1[pp] + size),
                        (float*)(s.Values[next] + size), (float*)(s.State0[next] + size), (float*)(s.State1[next] + size), c.Length, _f[group]);
                else
                    Sgd((float*)(s.Values[pp] + size), (float*)(s.Gradients[gp] + size), s.HasState ? (float*)(s.State0[pp] + size) : null,
                        (float*)(s.Values[next] + size), s.HasState ? (float*)(s.State0[next] + size) : null, c.Length, _f[group]);
            }
        }
    }

    // p·decay − (m' / (√v' / √bc2 + ε))·step_size, with m' = m + (g − m)(1 − β1) and v' = v·β2 + g²(1 − β2):
    // the AdamWBlock graph, operation for operation.
    private static void AdamW<T>(T* p, T* g, T* m, T* v, T* pOut, T* mOut, T* vOut, int n, in Scalars<T> k)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<T>.Count)
        {
            Vector<T> decay = new(k.A), omb1 = new(k.B), b2 = new(k.C), omb2 = new(k.D), stepSize = new(k.E), bc2 = new(k.F), eps = new(k.G), clip = new(k.Clip);
            for (; i <= n - Vector<T>.Count; i += Vector<T>.Count)
            {
                var gv = Vector.Load(g + i);
                if (k.Clipping) gv *= clip;
                var pv = Vector.Load(p + i);
                if (k.Decay) pv *= decay;
                var mv = Vector.Load(m + i);
                mv += (gv - mv) * omb1;
                var vv = Vector.Load(v + i) * b2 + gv * gv * omb2;
                var denom = Vector.SquareRoot(vv) / bc2 + eps;
                pv -= mv / denom * stepSize;
                mv.Store(mOut + i);
                vv.Store(vOut + i);
                pv.Store(pOut + i);
            }
        }
        for (; i < n; i++)
        {
            var gs = k.Clipping ? g[i] * k.Clip : g[i];
            var ps = k.Decay ? p[i] * k.A : p[i];
            var ms = m[i] + (gs - m[i]) * k.B;
            var vs = v[i] * k.C + gs * gs * k.D;
            var denom = T.Sqrt(vs) / k.F + k.G;
            mOut[i] = ms;
            vOut[i] = vs;
            pOut[i] = ps - ms / denom * k.E;
        }
    }

    // g += wd·p; buf = first ? g : buf·momentum + g(1 − dampening); g = nesterov ? g + buf·momentum : buf; p −= lr·g.
    private void Sgd<T>(T* p, T* g, T* buf, T* pOut, T* bufOut, int n, in Scalars<T> k)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var first = _firstStep;
        var nesterov = _spec.Nesterov;
        for (var i = 0; i < n; i++)
        {
            var gs = k.Clipping ? g[i] * k.Clip : g[i];
            if (k.Decay) gs += p[i] * k.A;
            if (buf is not null)
            {
                var running = buf[i] * k.B + gs * k.C;
                var b = first ? gs : running;
                bufOut[i] = b;
                gs = nesterov ? gs + b * k.B : b;
            }
            pOut[i] = p[i] - gs * k.D;
        }
    }

    private static Chunk[][] Partition(SlotPointers[] slots, int parts, long total)
    {
        var result = Enumerable.Range(0, parts).Select(_ => new List<Chunk>()).ToArray();
        long done = 0;
        for (var s = 0; s < slots.Length; s++)
            for (long start = 0; start < slots[s].Length; start += ChunkElements)
            {
                var length = (int)Math.Min(ChunkElements, slots[s].Length - start);
                var part = (int)Math.Min(parts - 1, done * parts / Math.Max(total, 1));
                result[part].Add(new Chunk(s, start, length));
                done += length;
            }
        return result.Select(l => l.ToArray()).ToArray();
    }

    private readonly record struct Chunk(int Slot, long Start, int Length);

    // AdamW: A decay, B 1−β1, C β2, D 1−β2, E step size, F √bc2, G ε. SGD: A weight decay, B momentum, C 1−dampening, D lr.
    private readonly record struct Scalars<T>(T A, T B, T C, T D, T E, T F, T G, T Clip, bool Clipping, bool Decay)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        public Scalars(double a, double b, double c, double d, double e, double f, double g, float clip, bool clipping, bool decay)
            : this(T.CreateTruncating(a), T.CreateTruncating(b), T.CreateTruncating(c), T.CreateTruncating(d), T.CreateTruncating(e),
                T.CreateTruncating(f), T.CreateTruncating(g), T.CreateTruncating(clip), clipping, decay) { }
    }

    /// <summary>Reads the addresses of gradient buffers allocated after this optimizer was created.</summary>
    internal void RefreshGradientAddresses(IReadOnlyList<ParameterSlot> slots)
    {
        for (var i = 0; i < _slots.Length; i++)
            _slots[i].Gradients[1] = slots[i].Gradients[1] is { } second ? SlotPointers.Address(second) : 0;
    }

    // The OrtValues' native buffers: allocated once by the TensorStore and never moved, so their addresses are stable.
    private sealed class SlotPointers
    {
        public SlotPointers(ParameterSlot slot)
        {
            IsDouble = slot.Type == TensorElementType.Double;
            Length = slot.ElementCount;
            Values = [Address(slot.Values[0]), Address(slot.Values[1])];
            Gradients = [Address(slot.Gradients[0]), slot.Gradients[1] is { } second ? Address(second) : 0];
            HasState = slot.States.Length > 0;
            State0 = HasState ? [Address(slot.States[0].Values[0]), Address(slot.States[0].Values[1])] : [0, 0];
            State1 = slot.States.Length > 1 ? [Address(slot.States[1].Values[0]), Address(slot.States[1].Values[1])] : [0, 0];
        }

        public bool IsDouble { get; }
        public long Length { get; }
        public bool HasState { get; }
        public nint[] Values { get; }
        public nint[] Gradients { get; }
        public nint[] State0 { get; }
        public nint[] State1 { get; }

        internal static nint Address(Microsoft.ML.OnnxRuntime.OrtValue value)
        {
            fixed (byte* p = value.GetTensorMutableRawData()) return (nint)p;
        }
    }
}
