using System.Runtime.InteropServices;
using System.Security.Cryptography;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Training.Caching;

/// <summary>
/// One example: a stable id (the cache key), its model inputs without the batch dim (for a text model, the token
/// ids and mask padded to the length of its bucket) and an optional label (shape <c>[]</c> for a class index).
/// </summary>
/// <param name="Id">Unique, stable id; the activation cache keys on it together with the inputs' hash.</param>
/// <param name="Inputs">Named inputs of one example (no batch dim).</param>
/// <param name="Label">The label of one example (no batch dim), or null.</param>
public sealed record TrainingExample(string Id, IReadOnlyList<SafeTensor> Inputs, SafeTensor? Label = null)
{
    /// <summary>SHA-256 (hex) over the inputs' names, types, shapes and bytes; a cached entry with another hash is stale.</summary>
    public string InputHash()
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var t in Inputs.OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes($"{t.Name}\0{t.DType}\0{string.Join(",", t.Shape)}\0"));
            sha.AppendData(t.Data);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>Shapes of the inputs, as a key that groups examples which can share a batch.</summary>
    internal string ShapeKey() => string.Join(";", Inputs.OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => $"{t.Name}:{t.DType}[{string.Join(",", t.Shape)}]"));
}

/// <summary>Stacks per-example tensors into batches and groups examples into batches of equal shapes.</summary>
public static class ExampleBatches
{
    /// <summary>
    /// Splits examples into batches of at most <paramref name="batchSize"/> whose inputs have equal shapes (one
    /// length bucket each), keeping the given order inside each bucket; with a <paramref name="seed"/> the examples
    /// are shuffled first and the batches are shuffled after.
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<TrainingExample>> Create(IReadOnlyList<TrainingExample> examples, int batchSize, int? seed = null)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var order = examples.ToArray();
        var rng = seed is { } s ? new Random(s) : null;
        rng?.Shuffle(order);
        var batches = new List<IReadOnlyList<TrainingExample>>();
        foreach (var bucket in order.GroupBy(e => e.ShapeKey(), StringComparer.Ordinal))
            batches.AddRange(bucket.Chunk(batchSize));
        if (rng is not null)
        {
            var shuffled = batches.ToArray();
            rng.Shuffle(shuffled);
            return shuffled;
        }
        return batches;
    }

    /// <summary>Stacks the examples' inputs and labels into one <see cref="TrainingBatch"/> (new dim 0).</summary>
    /// <exception cref="ActivationCacheException">The examples disagree on names, types or shapes, or a type cannot go into a batch.</exception>
    public static TrainingBatch Stack(IReadOnlyList<TrainingExample> examples) => Stack(examples, buffers: null);

    /// <summary>Stacks into reused buffers (null: fresh arrays); see <see cref="BatchStackBuffers"/>.</summary>
    internal static TrainingBatch Stack(IReadOnlyList<TrainingExample> examples, BatchStackBuffers? buffers)
    {
        ArgumentNullException.ThrowIfNull(examples);
        if (examples.Count == 0) throw new ArgumentException("A batch needs at least one example.", nameof(examples));
        var batch = new TrainingBatch();
        foreach (var t in examples[0].Inputs)
            AddTo(batch, t.Name, examples.Select(e => (e.Id, Find(e, t.Name))).ToList(), isLabel: false, buffers);
        if (examples[0].Label is not null)
            AddTo(batch, "label", examples.Select(e => (e.Id, e.Label ?? throw new ActivationCacheException($"Example '{e.Id}' has no label, but '{examples[0].Id}' in the same batch has one."))).ToList(), isLabel: true, buffers);
        return batch;
    }

    internal static void AddTo(TrainingBatch batch, string name, IReadOnlyList<(string Id, SafeTensor Tensor)> rows, bool isLabel, BatchStackBuffers? buffers = null)
    {
        var first = rows[0].Tensor;
        foreach (var (id, t) in rows)
            if (t.DType != first.DType || !t.Shape.SequenceEqual(first.Shape))
                throw new ActivationCacheException(
                    $"Examples '{rows[0].Id}' and '{id}' cannot share a batch: '{name}' is {first.DType}[{string.Join(",", first.Shape)}] in one and {t.DType}[{string.Join(",", t.Shape)}] in the other. Batch examples of the same padded length together (ExampleBatches.Create groups them).");
        long[] shape = [rows.Count, .. first.Shape];
        switch (first.DType)
        {
            case SafeTensorDType.F32:
                {
                    var data = Rows<float>(rows, name, buffers);
                    if (isLabel) batch.WithLabels(data, shape); else batch.Add(name, data, shape);
                    break;
                }
            case SafeTensorDType.I64:
                {
                    var data = Rows<long>(rows, name, buffers);
                    if (isLabel) batch.WithLabels(data, shape); else batch.Add(name, data, shape);
                    break;
                }
            case SafeTensorDType.Bool when !isLabel:
                batch.Add(name, Rows<bool>(rows, name, buffers), shape);
                break;
            default:
                throw new ActivationCacheException($"'{name}' holds {first.DType} values; a training batch takes float32, int64 or bool inputs and float32 or int64 labels.");
        }
    }

    // The rows' bytes back to back, copied straight into the typed buffer.
    private static Memory<T> Rows<T>(IReadOnlyList<(string Id, SafeTensor Tensor)> rows, string name, BatchStackBuffers? buffers) where T : unmanaged
    {
        var rowBytes = rows[0].Tensor.Data.Length;
        var length = checked(rows.Count * rowBytes / System.Runtime.CompilerServices.Unsafe.SizeOf<T>());
        var data = buffers is null ? new T[length] : buffers.Rent<T>(name, length);
        var target = MemoryMarshal.AsBytes(data.Span);
        for (var i = 0; i < rows.Count; i++) rows[i].Tensor.Data.CopyTo(target[(i * rowBytes)..]);
        return data;
    }

    private static SafeTensor Find(TrainingExample e, string name) =>
        e.Inputs.FirstOrDefault(t => t.Name == name)
        ?? throw new ActivationCacheException($"Example '{e.Id}' has no input '{name}' (it has {string.Join(", ", e.Inputs.Select(t => t.Name))}).");
}
