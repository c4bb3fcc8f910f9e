using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// The finite check over a candidate's checkpoint: parameters and optimizer state (AdamW's <c>exp_avg</c> and
/// <c>exp_avg_sq</c>, momentum buffers). An <c>inf</c> in <c>exp_avg_sq</c> leaves the weights finite but stops the
/// parameter from ever learning again, so the weights alone are not enough.
/// </summary>
internal static class CheckpointFiniteCheck
{
    /// <summary>Null when every float tensor is finite (or the checkpoint has no tensors file), else the first offending tensor.</summary>
    public static string? FindNonFinite(string? checkpointDirectory)
    {
        if (checkpointDirectory is null) return null;
        var path = Path.Combine(checkpointDirectory, CheckpointStore.TensorsFileName);
        if (!File.Exists(path)) return null;
        SafeTensorsFile file;
        try { file = SafeTensorsFile.Read(path); }
        catch (SafeTensorsFormatException e) { return $"the checkpoint cannot be read: {e.Message}"; }
        foreach (var t in file.Tensors)
        {
            switch (t.DType)
            {
                case SafeTensorDType.F32:
                    {
                        var span = t.AsSpan<float>();
                        for (var i = 0; i < span.Length; i++)
                            if (!float.IsFinite(span[i])) return $"checkpoint tensor '{t.Name}' has {span[i]} at flat index {i}";
                        break;
                    }
                case SafeTensorDType.F64:
                    {
                        var span = t.AsSpan<double>();
                        for (var i = 0; i < span.Length; i++)
                            if (!double.IsFinite(span[i])) return $"checkpoint tensor '{t.Name}' has {span[i]} at flat index {i}";
                        break;
                    }
            }
        }
        return null;
    }
}
