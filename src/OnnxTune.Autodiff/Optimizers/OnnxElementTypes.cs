using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Optimizers;

/// <summary>Maps the element-type strings of <see cref="Artifacts.TensorSpec"/> to ONNX data types and back.</summary>
public static class OnnxElementTypes
{
    /// <summary>
    /// Parses an element type: ONNX names (<c>float</c>, <c>double</c>, <c>int64</c>, <c>bool</c>, <c>float16</c>...)
    /// and the NumPy/safetensors spellings <c>float32</c>, <c>float64</c>, <c>f32</c>, <c>f64</c>.
    /// </summary>
    /// <exception cref="OnnxTuneException">The string names no known type.</exception>
    public static DataType Parse(string elementType, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(elementType);
        switch (elementType.Trim().ToLowerInvariant())
        {
            case "float32" or "f32" or "tensor(float)": return DataType.Float;
            case "float64" or "f64" or "tensor(double)": return DataType.Double;
            case "i64" or "tensor(int64)": return DataType.Int64;
            case "i32" or "tensor(int32)": return DataType.Int32;
        }
        if (Enum.TryParse<DataType>(elementType.Trim(), ignoreCase: true, out var t) && t != DataType.Undefined && Enum.IsDefined(t))
            return t;
        throw new OnnxTuneException($"Tensor '{tensorName}' has element type '{elementType}', which is not an ONNX tensor type.");
    }

    /// <summary>The canonical lower-case ONNX name (<c>float</c>, <c>int64</c>...).</summary>
    public static string Name(DataType type) => type.ToString().ToLowerInvariant();
}
