using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Onnx.Tensors;

/// <summary>Creates and reads <see cref="TensorProto"/> values (always little-endian raw data on write).</summary>
public static class TensorProtos
{
    /// <summary>A float32 tensor.</summary>
    public static TensorProto Float(string name, ReadOnlySpan<float> data, params long[] dims) =>
        Raw(name, DataType.Float, MemoryMarshal.AsBytes(data), dims, data.Length);

    /// <summary>A float64 tensor.</summary>
    public static TensorProto Double(string name, ReadOnlySpan<double> data, params long[] dims) =>
        Raw(name, DataType.Double, MemoryMarshal.AsBytes(data), dims, data.Length);

    /// <summary>An int64 tensor.</summary>
    public static TensorProto Int64(string name, ReadOnlySpan<long> data, params long[] dims) =>
        Raw(name, DataType.Int64, MemoryMarshal.AsBytes(data), dims, data.Length);

    /// <summary>A bool tensor.</summary>
    public static TensorProto Bool(string name, ReadOnlySpan<bool> data, params long[] dims) =>
        Raw(name, DataType.Bool, MemoryMarshal.AsBytes(data), dims, data.Length);

    private static TensorProto Raw(string name, DataType type, ReadOnlySpan<byte> bytes, long[] dims, int count)
    {
        long expected = 1;
        foreach (var d in dims) expected *= d;
        if (expected != count)
            throw new ArgumentException($"Tensor '{name}': {count} values do not fill shape [{string.Join(",", dims)}] ({expected}).");
        var t = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(bytes) };
        t.Dims.AddRange(dims);
        return t;
    }

    /// <summary>Number of elements of a tensor's shape.</summary>
    public static long ElementCount(TensorProto t)
    {
        long n = 1;
        foreach (var d in t.Dims) n *= d;
        return n;
    }

    /// <summary>
    /// Copies a tensor's values, as float32, into <paramref name="destination"/> (its length must be the element
    /// count); float32 raw data is copied without an intermediate array. Other types convert as <see cref="ToFloatArray"/>.
    /// </summary>
    public static void CopyFloats(TensorProto t, Span<float> destination)
    {
        var n = checked((int)ElementCount(t));
        if (destination.Length != n)
            throw new ArgumentException($"Tensor '{t.Name}' has {n} values; the destination holds {destination.Length}.", nameof(destination));
        if ((DataType)t.DataType == DataType.Float && t.RawData.Length > 0)
            MemoryMarshal.Cast<byte, float>(RawSpan(t, n * 4)).CopyTo(destination);
        else
            ToFloatArray(t).CopyTo(destination);
    }

    /// <summary>
    /// Reads a float, double, float16 or bfloat16 tensor as float32 values. 16-bit values come from raw_data
    /// (little-endian) or from int32_data, where ONNX stores each one's bit pattern in the low 16 bits.
    /// </summary>
    public static float[] ToFloatArray(TensorProto t)
    {
        var n = checked((int)ElementCount(t));
        var type = (DataType)t.DataType;
        switch (type)
        {
            case DataType.Float:
                if (t.RawData.Length > 0) return MemoryMarshal.Cast<byte, float>(RawSpan(t, n * 4)).ToArray();
                return Check(t, t.FloatData.ToArray(), n);
            case DataType.Double:
                {
                    var d = ToDoubleArray(t);
                    var f = new float[n];
                    for (var i = 0; i < n; i++) f[i] = (float)d[i];
                    return f;
                }
            case DataType.Float16:
            case DataType.Bfloat16:
                {
                    var bits = Bits16(t, n);
                    var f = new float[n];
                    for (var i = 0; i < n; i++)
                        f[i] = type == DataType.Float16 ? (float)BitConverter.UInt16BitsToHalf(bits[i]) : BitConverter.Int32BitsToSingle(bits[i] << 16);
                    return f;
                }
            default:
                throw new OnnxTuneException($"Tensor '{t.Name}' has type {type}; a floating-point tensor was expected.");
        }
    }

    private static ushort[] Bits16(TensorProto t, int n)
    {
        if (t.RawData.Length > 0)
        {
            var raw = RawSpan(t, n * 2);
            var bits = new ushort[n];
            for (var i = 0; i < n; i++) bits[i] = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]);
            return bits;
        }
        return Check(t, t.Int32Data.Select(x => unchecked((ushort)x)).ToArray(), n);
    }

    /// <summary>Reads a float, double, float16 or bfloat16 tensor as float64 values (see <see cref="ToFloatArray"/>).</summary>
    public static double[] ToDoubleArray(TensorProto t)
    {
        var n = checked((int)ElementCount(t));
        var type = (DataType)t.DataType;
        switch (type)
        {
            case DataType.Double:
                if (t.RawData.Length > 0) return MemoryMarshal.Cast<byte, double>(RawSpan(t, n * 8)).ToArray();
                return Check(t, t.DoubleData.ToArray(), n);
            case DataType.Float or DataType.Float16 or DataType.Bfloat16:
                {
                    var f = ToFloatArray(t);
                    var d = new double[n];
                    for (var i = 0; i < n; i++) d[i] = f[i];
                    return d;
                }
            default:
                throw new OnnxTuneException($"Tensor '{t.Name}' has type {type}; a floating-point tensor was expected.");
        }
    }

    /// <summary>Reads an int64 or int32 tensor as int64 values.</summary>
    public static long[] ToInt64Array(TensorProto t)
    {
        var n = checked((int)ElementCount(t));
        var type = (DataType)t.DataType;
        switch (type)
        {
            case DataType.Int64:
                if (t.RawData.Length > 0) return MemoryMarshal.Cast<byte, long>(RawSpan(t, n * 8)).ToArray();
                return Check(t, t.Int64Data.ToArray(), n);
            case DataType.Int32:
                if (t.RawData.Length > 0) return Array.ConvertAll(MemoryMarshal.Cast<byte, int>(RawSpan(t, n * 4)).ToArray(), x => (long)x);
                return Check(t, t.Int32Data.Select(x => (long)x).ToArray(), n);
            default:
                throw new OnnxTuneException($"Tensor '{t.Name}' has type {type}; an integer tensor was expected.");
        }
    }

    private static ReadOnlySpan<byte> RawSpan(TensorProto t, int bytes)
    {
        var span = t.RawData.Span;
        if (span.Length != bytes)
            throw new OnnxModelFormatException($"Tensor '{t.Name}' has {span.Length} bytes of raw data; its shape [{string.Join(",", t.Dims)}] needs {bytes}.");
        return span;
    }

    private static T[] Check<T>(TensorProto t, T[] values, int n) =>
        values.Length == n ? values
            : throw new OnnxModelFormatException($"Tensor '{t.Name}' holds {values.Length} values; its shape [{string.Join(",", t.Dims)}] needs {n}.");

    /// <summary>Size in bytes of one element of an ONNX data type (0 for strings/unknown).</summary>
    public static int ElementSize(DataType type) => type switch
    {
        DataType.Float or DataType.Int32 or DataType.Uint32 => 4,
        DataType.Double or DataType.Int64 or DataType.Uint64 => 8,
        DataType.Float16 or DataType.Bfloat16 or DataType.Int16 or DataType.Uint16 => 2,
        DataType.Int8 or DataType.Uint8 or DataType.Bool => 1,
        _ => 0,
    };

    /// <summary>True for the float types gradients flow through.</summary>
    public static bool IsFloating(DataType type) =>
        type is DataType.Float or DataType.Double or DataType.Float16 or DataType.Bfloat16;
}
