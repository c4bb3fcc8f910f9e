using System.Reflection;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxTune.Migration;

/// <summary>
/// Reads the <see cref="OrtValue"/> inside ORT's <see cref="FixedBufferOnnxValue"/>, which ORT's training API took but
/// exposes no public accessor for (its <c>Value</c> property is internal in Microsoft.ML.OnnxRuntime 1.31). Only the
/// FixedBufferOnnxValue overloads of <see cref="OrtTrainingSession"/> use it; the OrtValue overloads need nothing.
/// </summary>
internal static class FixedBuffers
{
    private static readonly PropertyInfo? ValueProperty =
        typeof(FixedBufferOnnxValue).GetProperty("Value", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public);

    public static IReadOnlyCollection<OrtValue> Values(IReadOnlyCollection<FixedBufferOnnxValue> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        return values.Select(Value).ToList();
    }

    public static void WriteScalar(IReadOnlyCollection<FixedBufferOnnxValue> outputs, float value)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        if (outputs.Count != 1)
            throw new ArgumentException($"Length of outputValues ({outputs.Count}) must match that of the model (1: the loss).", nameof(outputs));
        var v = Value(outputs.First());
        if (v.GetTensorTypeAndShape().ElementDataType != TensorElementType.Float || v.GetTensorTypeAndShape().ElementCount != 1)
            throw new ArgumentException("The loss output must be a float tensor with one element.", nameof(outputs));
        v.GetTensorMutableDataAsSpan<float>()[0] = value;
    }

    private static OrtValue Value(FixedBufferOnnxValue v) =>
        ValueProperty?.GetValue(v) as OrtValue
        ?? throw new NotSupportedException("This Microsoft.ML.OnnxRuntime version does not expose FixedBufferOnnxValue's tensor; pass OrtValues to OrtTrainingSession instead.");
}
