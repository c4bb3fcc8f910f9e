using System.Security.Cryptography;
using System.Text;

namespace OnnxTune.Autodiff.Lora;

/// <summary>
/// PEFT's <c>lora_A</c> initialisation, <c>kaiming_uniform_(A, a=√5)</c> on <c>[r, in]</c> = U(−1/√in, 1/√in), drawn
/// from a portable generator so any language can reproduce it: SplitMix64 seeded with the first 8 bytes
/// (little-endian) of SHA-256(UTF-8 "<c>&lt;seed&gt;:&lt;tensor name&gt;</c>"); each value is
/// <c>(float)((2u − 1) · bound)</c> with <c>u = (next() &gt;&gt; 11) · 2⁻⁵³</c>, row-major.
/// tests/parity/make_fixtures.py reproduces it bit for bit.
/// </summary>
internal static class LoraInitializer
{
    public static float[] KaimingUniform(int seed, string name, int rank, long inFeatures)
    {
        var bound = 1.0 / Math.Sqrt(inFeatures);
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(seed.ToString(System.Globalization.CultureInfo.InvariantCulture) + ":" + name));
        var state = BitConverter.IsLittleEndian ? BitConverter.ToUInt64(hash, 0) : System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(hash);
        var values = new float[checked(rank * (int)inFeatures)];
        for (var i = 0; i < values.Length; i++)
        {
            state += 0x9E3779B97F4A7C15UL;
            var z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            var u = (z >> 11) * (1.0 / (1UL << 53));
            values[i] = (float)((2 * u - 1) * bound);
        }
        return values;
    }
}
