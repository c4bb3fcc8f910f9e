using Google.FlatBuffers;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Adapters.Generated;

namespace OnnxTune.Training.Adapters;

/// <summary>One tensor of an adapter file: name, shape and little-endian float32 or float64 bytes.</summary>
/// <param name="Name">The model input it sets.</param>
/// <param name="Shape">Dims.</param>
/// <param name="IsDouble">float64 (else float32).</param>
/// <param name="Data">Raw little-endian values.</param>
public sealed record AdapterParameter(string Name, long[] Shape, bool IsDouble, byte[] Data);

/// <summary>
/// Reads and writes ONNX Runtime's LoRA adapter files (<c>.onnx_adapter</c>: FlatBuffers, file identifier
/// <c>TORT</c>, format version 1, adapter and model version, parameters name → tensor), which
/// <c>OrtLoraAdapter</c> loads and <c>RunOptions.AddActiveLoraAdapter</c> feeds to a session per run.
/// </summary>
public static class OnnxAdapterFile
{
    /// <summary>The adapter format version ONNX Runtime 1.20+ reads.</summary>
    public const int FormatVersion = 1;

    /// <summary>The FlatBuffers file identifier.</summary>
    public const string FileIdentifier = "TORT";

    /// <summary>Writes an adapter file atomically.</summary>
    public static void Write(string path, IEnumerable<AdapterParameter> parameters, int adapterVersion = 1, int modelVersion = 1)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(parameters);
        AtomicFile.WriteAllBytes(path, ToBytes(parameters, adapterVersion, modelVersion));
    }

    /// <summary>The bytes of an adapter file.</summary>
    public static byte[] ToBytes(IEnumerable<AdapterParameter> parameters, int adapterVersion = 1, int modelVersion = 1)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var list = parameters.ToList();
        var builder = new FlatBufferBuilder(1024 + list.Sum(p => p.Data.Length + 64));
        var offsets = new Offset<Parameter>[list.Count];
        for (var i = 0; i < list.Count; i++)
        {
            var p = list[i];
            var name = builder.CreateString(p.Name);
            var dims = Parameter.CreateDimsVector(builder, p.Shape);
            // raw_data is force_align 8: start the vector on an 8-byte boundary so ORT can map the values in place.
            builder.StartVector(1, p.Data.Length, 8);
            builder.Add<byte>(p.Data);
            var data = builder.EndVector();
            offsets[i] = Parameter.CreateParameter(builder, name, dims, p.IsDouble ? TensorDataType.DOUBLE : TensorDataType.FLOAT, data);
        }
        var vector = Adapter.CreateParametersVector(builder, offsets);
        var root = Adapter.CreateAdapter(builder, FormatVersion, adapterVersion, modelVersion, vector);
        Adapter.FinishAdapterBuffer(builder, root);
        return builder.SizedByteArray();
    }

    /// <summary>Reads an adapter file.</summary>
    /// <exception cref="AdapterFormatException">The file is not an adapter file (identifier, version, verification) or holds a tensor type other than float/double.</exception>
    public static (int AdapterVersion, int ModelVersion, IReadOnlyList<AdapterParameter> Parameters) Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var bytes = File.ReadAllBytes(path);
        var bb = new ByteBuffer(bytes);
        if (bytes.Length < 8 || !Adapter.AdapterBufferHasIdentifier(bb))
            throw new AdapterFormatException($"'{path}' is not an ONNX Runtime adapter file (no '{FileIdentifier}' identifier).");
        var result = new List<AdapterParameter>();
        Adapter adapter;
        try
        {
            adapter = Adapter.GetRootAsAdapter(bb);
            if (adapter.FormatVersion != FormatVersion)
                throw new AdapterFormatException($"'{path}' has adapter format version {adapter.FormatVersion}; version {FormatVersion} is supported.");
            for (var i = 0; i < adapter.ParametersLength; i++)
            {
                var p = adapter.Parameters(i)!.Value;
                if (p.DataType is not (TensorDataType.FLOAT or TensorDataType.DOUBLE))
                    throw new AdapterFormatException($"'{path}': parameter '{p.Name}' is {p.DataType}; OnnxTune reads float and double adapters.");
                result.Add(new AdapterParameter(p.Name ?? "", p.GetDimsArray() ?? [], p.DataType == TensorDataType.DOUBLE, p.GetRawDataArray() ?? []));
            }
        }
        catch (Exception e) when (e is ArgumentException or IndexOutOfRangeException or InvalidOperationException or OverflowException)
        {
            throw new AdapterFormatException($"'{path}' is a damaged adapter file: {e.Message}");
        }
        return (adapter.AdapterVersion, adapter.ModelVersion, result);
    }
}

/// <summary>An adapter file is malformed; the message names the file and the problem.</summary>
public sealed class AdapterFormatException(string message) : OnnxTuneException(message);
