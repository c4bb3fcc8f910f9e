using System.Runtime.InteropServices;

namespace OnnxTune.Training.SafeTensors;

/// <summary>Element types OnnxTune reads and writes in safetensors files (their header spelling in brackets).</summary>
public enum SafeTensorDType
{
    /// <summary>32-bit float (<c>F32</c>).</summary>
    F32,
    /// <summary>64-bit float (<c>F64</c>).</summary>
    F64,
    /// <summary>64-bit signed integer (<c>I64</c>).</summary>
    I64,
    /// <summary>32-bit signed integer (<c>I32</c>).</summary>
    I32,
    /// <summary>Boolean, one byte each (<c>BOOL</c>).</summary>
    Bool,
}

/// <summary>One named tensor of a safetensors file: element type, shape and little-endian bytes.</summary>
public sealed class SafeTensor
{
    /// <summary>Creates a tensor; the byte count must match the shape and element type.</summary>
    /// <exception cref="ArgumentException">The data length does not match the shape.</exception>
    public SafeTensor(string name, SafeTensorDType dtype, long[] shape, byte[] data)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        if (shape.Any(d => d < 0))
            throw new ArgumentException($"Tensor '{name}' has a negative dim in shape [{string.Join(",", shape)}].", nameof(shape));
        var expected = checked(ElementCount(shape) * ElementSize(dtype));
        if (data.Length != expected)
            throw new ArgumentException($"Tensor '{name}': {data.Length} bytes do not match {dtype}[{string.Join(",", shape)}] ({expected} bytes).", nameof(data));
        Name = name;
        DType = dtype;
        Shape = shape;
        Data = data;
    }

    /// <summary>Tensor name.</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public SafeTensorDType DType { get; }

    /// <summary>Shape (empty for a scalar).</summary>
    public long[] Shape { get; }

    /// <summary>Raw little-endian bytes.</summary>
    public byte[] Data { get; }

    /// <summary>Number of elements.</summary>
    public long ElementCount() => ElementCount(Shape);

    /// <summary>A float32 tensor (values copied).</summary>
    public static SafeTensor FromFloats(string name, ReadOnlySpan<float> values, params long[] shape) =>
        new(name, SafeTensorDType.F32, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>A float64 tensor (values copied).</summary>
    public static SafeTensor FromDoubles(string name, ReadOnlySpan<double> values, params long[] shape) =>
        new(name, SafeTensorDType.F64, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>An int64 tensor (values copied).</summary>
    public static SafeTensor FromInt64s(string name, ReadOnlySpan<long> values, params long[] shape) =>
        new(name, SafeTensorDType.I64, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>An int32 tensor (values copied).</summary>
    public static SafeTensor FromInt32s(string name, ReadOnlySpan<int> values, params long[] shape) =>
        new(name, SafeTensorDType.I32, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>A bool tensor (values copied).</summary>
    public static SafeTensor FromBools(string name, ReadOnlySpan<bool> values, params long[] shape) =>
        new(name, SafeTensorDType.Bool, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>The data viewed as <typeparamref name="T"/> (must match <see cref="DType"/>).</summary>
    /// <exception cref="SafeTensorsFormatException">The element type is not <typeparamref name="T"/>.</exception>
    public ReadOnlySpan<T> AsSpan<T>() where T : unmanaged
    {
        var ok = DType switch
        {
            SafeTensorDType.F32 => typeof(T) == typeof(float),
            SafeTensorDType.F64 => typeof(T) == typeof(double),
            SafeTensorDType.I64 => typeof(T) == typeof(long),
            SafeTensorDType.I32 => typeof(T) == typeof(int),
            SafeTensorDType.Bool => typeof(T) == typeof(bool) || typeof(T) == typeof(byte),
            _ => false,
        };
        if (!ok)
            throw new SafeTensorsFormatException($"Tensor '{Name}' holds {DType} values, not {typeof(T).Name}.");
        return MemoryMarshal.Cast<byte, T>(Data);
    }

    /// <summary>A float32 copy of a float tensor (F32 or F64).</summary>
    public float[] ToFloatArray() => DType switch
    {
        SafeTensorDType.F32 => AsSpan<float>().ToArray(),
        SafeTensorDType.F64 => Array.ConvertAll(AsSpan<double>().ToArray(), d => (float)d),
        _ => throw new SafeTensorsFormatException($"Tensor '{Name}' holds {DType} values; a float tensor was expected."),
    };

    /// <summary>An int64 copy of an integer tensor (I64 or I32).</summary>
    public long[] ToInt64Array() => DType switch
    {
        SafeTensorDType.I64 => AsSpan<long>().ToArray(),
        SafeTensorDType.I32 => Array.ConvertAll(AsSpan<int>().ToArray(), i => (long)i),
        _ => throw new SafeTensorsFormatException($"Tensor '{Name}' holds {DType} values; an integer tensor was expected."),
    };

    /// <summary>Bytes per element.</summary>
    public static int ElementSize(SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.F32 or SafeTensorDType.I32 => 4,
        SafeTensorDType.F64 or SafeTensorDType.I64 => 8,
        SafeTensorDType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    internal static long ElementCount(long[] shape)
    {
        long n = 1;
        foreach (var d in shape) n = checked(n * d);
        return n;
    }

    internal static string HeaderName(SafeTensorDType dtype) => dtype == SafeTensorDType.Bool ? "BOOL" : dtype.ToString();
}

/// <summary>A safetensors file is malformed: header length, JSON, dtype, shape or data offsets (the message says which).</summary>
public sealed class SafeTensorsFormatException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public SafeTensorsFormatException(string message, Exception? inner = null) : base(message, inner) { }
}
