using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxTune.Training;

/// <summary>
/// One batch: named graph inputs and the labels, each a float32, int64 or bool buffer with a shape. The session
/// wraps the caller's memory (pinned for the run, never copied), so keep the buffers unchanged during a step.
/// </summary>
public sealed class TrainingBatch
{
    private readonly Dictionary<string, BatchTensor> _inputs = new(StringComparer.Ordinal);

    /// <summary>Named inputs added so far (labels excluded).</summary>
    public IReadOnlyDictionary<string, BatchTensor> Inputs => _inputs;

    /// <summary>The labels (null when the loss needs none).</summary>
    public BatchTensor? Labels { get; private set; }

    /// <summary>Adds a float32 input.</summary>
    public TrainingBatch Add(string name, Memory<float> data, params long[] shape) => Put(name, BatchTensor.Create(data, shape));

    /// <summary>Adds an int64 input.</summary>
    public TrainingBatch Add(string name, Memory<long> data, params long[] shape) => Put(name, BatchTensor.Create(data, shape));

    /// <summary>Adds a bool input.</summary>
    public TrainingBatch Add(string name, Memory<bool> data, params long[] shape) => Put(name, BatchTensor.Create(data, shape));

    /// <summary>Sets float labels (mse, bce-with-logits, l1).</summary>
    public TrainingBatch WithLabels(Memory<float> data, params long[] shape) { Labels = BatchTensor.Create(data, shape); return this; }

    /// <summary>Sets class-index labels (cross-entropy).</summary>
    public TrainingBatch WithLabels(Memory<long> data, params long[] shape) { Labels = BatchTensor.Create(data, shape); return this; }

    /// <summary>The per-example weights (null: all 1).</summary>
    public BatchTensor? SampleWeights { get; private set; }

    /// <summary>
    /// Sets per-example loss weights (the labels' shape) for artifacts built with a sample-weight input
    /// (<c>LossSpec.SampleWeightName</c>): the loss becomes <c>Σ wᵢ·lᵢ / Σ wᵢ</c>. Weights must be finite and ≥ 0.
    /// </summary>
    public TrainingBatch WithSampleWeights(Memory<float> data, params long[] shape) { SampleWeights = BatchTensor.Create(data, shape); return this; }

    /// <summary>The teacher scores for distillation (null: none).</summary>
    public BatchTensor? TeacherScores { get; private set; }

    /// <summary>The per-example distillation factors (null: none).</summary>
    public BatchTensor? DistillationFactors { get; private set; }

    /// <summary>
    /// Sets teacher scores <c>[N, C]</c> and per-example factors <c>[N]</c> for artifacts built with a distillation term
    /// (<c>LossSpec.DistillationTargetName</c>); a factor of 0 leaves that example out of the term.
    /// </summary>
    public TrainingBatch WithDistillation(Memory<float> teacherScores, Memory<float> factors, int rows, int classes)
    {
        TeacherScores = BatchTensor.Create(teacherScores, [rows, classes]);
        DistillationFactors = BatchTensor.Create(factors, [rows]);
        return this;
    }

    private TrainingBatch Put(string name, BatchTensor t)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (!_inputs.TryAdd(name, t))
            throw new ArgumentException($"The batch already has an input named '{name}'.", nameof(name));
        return this;
    }
}

/// <summary>A tensor of a <see cref="TrainingBatch"/>: element type, shape and the caller's memory.</summary>
public sealed class BatchTensor
{
    private readonly Func<OrtValue> _wrap;

    private BatchTensor(TensorElementType type, long[] shape, int length, Func<OrtValue> wrap, object memory)
    {
        ElementType = type;
        Shape = shape;
        Length = length;
        _wrap = wrap;
        Memory = memory;
    }

    /// <summary>Element type.</summary>
    public TensorElementType ElementType { get; }

    /// <summary>Shape.</summary>
    public long[] Shape { get; }

    /// <summary>Number of elements in the buffer.</summary>
    public int Length { get; }

    /// <summary>The caller's <see cref="Memory{T}"/> (boxed).</summary>
    internal object Memory { get; }

    internal ReadOnlySpan<float> Floats => ((Memory<float>)Memory).Span;

    internal ReadOnlySpan<long> Int64s => ((Memory<long>)Memory).Span;

    internal static BatchTensor Create<T>(Memory<T> data, long[] shape) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(shape);
        var type = typeof(T) == typeof(float) ? TensorElementType.Float
            : typeof(T) == typeof(long) ? TensorElementType.Int64
            : typeof(T) == typeof(bool) ? TensorElementType.Bool
            : throw new ArgumentException($"Unsupported element type {typeof(T).Name}.");
        var copy = (long[])shape.Clone();
        return new BatchTensor(type, copy, data.Length,
            () => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, data, copy), data);
    }

    /// <summary>Wraps the caller's memory (pinned until the value is disposed).</summary>
    internal OrtValue ToOrtValue() => _wrap();
}
