using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using OnnxTune.Onnx.ModelIO;
using static TorchSharp.torch;

namespace OnnxTune.Benchmarks.TorchSharp;

/// <summary>Writes tensors as a safetensors file (8-byte little-endian header length, JSON header, raw data).</summary>
internal static class SafeTensorsDump
{
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        var header = new Dictionary<string, object> { ["__metadata__"] = metadata };
        var blobs = new List<byte[]>();
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            var contiguous = tensor.detach().contiguous();
            var (dtype, bytes) = contiguous.dtype switch
            {
                ScalarType.Float32 => ("F32", ToBytes(contiguous.data<float>().ToArray())),
                ScalarType.Int64 => ("I64", ToBytes(contiguous.data<long>().ToArray())),
                _ => throw new NotSupportedException($"tensor '{name}': dtype {contiguous.dtype} is not written by this dump"),
            };
            header[name] = new Dictionary<string, object>
            {
                ["dtype"] = dtype,
                ["shape"] = contiguous.shape,
                ["data_offsets"] = new[] { offset, offset + bytes.Length },
            };
            blobs.Add(bytes);
            offset += bytes.Length;
        }

        var json = JsonSerializer.SerializeToUtf8Bytes(header);
        int padded = (json.Length + 7) / 8 * 8;
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
            stream.Write(length);
            stream.Write(json);
            stream.Write(Encoding.ASCII.GetBytes(new string(' ', padded - json.Length)));
            foreach (var blob in blobs)
            {
                stream.Write(blob);
            }
        });
    }

    private static byte[] ToBytes<T>(T[] values) where T : unmanaged
    {
        var bytes = new byte[values.Length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>()];
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).CopyTo(bytes);
        return bytes;
    }
}
