using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxTune.Training;

/// <summary>
/// Single owner of the session's long-lived tensors: per trainable parameter two value buffers, two gradient
/// buffers and two buffers per optimizer state (ping-pong, so no run reads and writes the same buffer). The second
/// gradient buffer is allocated only once gradients are accumulated: a step from zero gradients writes the first.
/// Everything is allocated once by ONNX Runtime's CPU allocator and released in <see cref="Dispose"/>.
/// </summary>
internal sealed class TensorStore : IDisposable
{
    private readonly List<OrtValue> _owned = [];
    private bool _disposed;

    /// <param name="parameters">Name, type and shape of each trainable parameter.</param>
    /// <param name="stateSuffixes">Optimizer state suffixes.</param>
    /// <param name="inPlaceUpdates">Parameters and states are updated in place (the fused CPU optimizer): one buffer
    /// each, exposed at both parities. Gradients ping-pong once accumulated (accumulation reads one and writes the other).</param>
    /// <param name="accumulating">Allocate the second gradient buffers now (else <see cref="EnsureAccumulationBuffers"/>).</param>
    public TensorStore(IReadOnlyList<(string Name, TensorElementType Type, long[] Shape)> parameters, IReadOnlyList<string> stateSuffixes, bool inPlaceUpdates = false, bool accumulating = true)
    {
        OrtValue[] Pair(TensorElementType type, long[] shape)
        {
            var first = Allocate(type, shape);
            return [first, inPlaceUpdates ? first : Allocate(type, shape)];
        }
        try
        {
            Slots = parameters.Select(p => new ParameterSlot(
                p.Name, p.Type, p.Shape,
                Pair(p.Type, p.Shape),
                [Allocate(p.Type, p.Shape), accumulating ? Allocate(p.Type, p.Shape) : null!],
                stateSuffixes.Select(s => new StateSlot(p.Name + s, Pair(p.Type, p.Shape))).ToArray()))
                .ToArray();
        }
        catch
        {
            Dispose();
            throw;
        }
        ByName = Slots.ToDictionary(s => s.Name, StringComparer.Ordinal);
    }

    public IReadOnlyList<ParameterSlot> Slots { get; }

    public IReadOnlyDictionary<string, ParameterSlot> ByName { get; }

    /// <summary>Whether every slot's second gradient buffer exists.</summary>
    public bool HasAccumulationBuffers => Slots.Count == 0 || Slots[0].Gradients[1] is not null;

    /// <summary>Allocates the second gradient buffers (zeroed) if they do not exist yet; returns whether it did.</summary>
    public bool EnsureAccumulationBuffers()
    {
        if (HasAccumulationBuffers) return false;
        foreach (var slot in Slots) slot.Gradients[1] = Allocate(slot.Type, slot.Shape);
        return true;
    }

    /// <summary>Total bytes held.</summary>
    public long TotalBytes { get; private set; }

    private OrtValue Allocate(TensorElementType type, long[] shape)
    {
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape);
        _owned.Add(v);
        var raw = v.GetTensorMutableRawData();
        raw.Clear();
        TotalBytes += raw.Length;
        return v;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var v in _owned) v.Dispose();
        _owned.Clear();
    }

    /// <summary>Copies a value out as float32 (float or double tensors).</summary>
    public static float[] ReadFloats(OrtValue value, TensorElementType type) => type switch
    {
        TensorElementType.Float => value.GetTensorDataAsSpan<float>().ToArray(),
        TensorElementType.Double => Array.ConvertAll(value.GetTensorDataAsSpan<double>().ToArray(), d => (float)d),
        _ => throw new NotSupportedException(type.ToString()),
    };

    /// <summary>Overwrites a value from float32 data (float or double tensors).</summary>
    public static void WriteFloats(OrtValue value, TensorElementType type, ReadOnlySpan<float> data)
    {
        switch (type)
        {
            case TensorElementType.Float:
                data.CopyTo(value.GetTensorMutableDataAsSpan<float>());
                break;
            case TensorElementType.Double:
                var dst = value.GetTensorMutableDataAsSpan<double>();
                for (var i = 0; i < data.Length; i++) dst[i] = data[i];
                break;
            default:
                throw new NotSupportedException(type.ToString());
        }
    }

    /// <summary>Raw bytes of a value (for checkpoints).</summary>
    public static byte[] ReadBytes(OrtValue value) => value.GetTensorMutableRawData().ToArray();

    /// <summary>Overwrites a value's raw bytes (lengths must match).</summary>
    public static void WriteBytes(OrtValue value, ReadOnlySpan<byte> bytes) => bytes.CopyTo(value.GetTensorMutableRawData());
}

/// <summary>The buffers of one trainable parameter.</summary>
internal sealed record ParameterSlot(string Name, TensorElementType Type, long[] Shape, OrtValue[] Values, OrtValue[] Gradients, StateSlot[] States)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>The two buffers of one optimizer state tensor.</summary>
internal sealed record StateSlot(string Name, OrtValue[] Values);
