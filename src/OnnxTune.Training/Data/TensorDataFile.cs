using System.Runtime.InteropServices;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Training.Data;

/// <summary>
/// A data set stored as one safetensors file: one tensor per graph input (named like the input) plus the label
/// tensor, all batched on dimension 0. Validates the file once up front (missing tensors, element types, dim-0
/// counts, fixed dims, NaN/Inf values) and gathers rows into <see cref="TrainingBatch"/>es.
/// </summary>
public sealed class TensorDataFile
{
    private readonly List<Column> _columns;

    private sealed record Column(string Name, SafeTensor Tensor, bool IsLabel, int RowElements);

    private TensorDataFile(string source, List<Column> columns, int sampleCount)
    {
        Source = source;
        _columns = columns;
        SampleCount = sampleCount;
    }

    /// <summary>The file (or source name) the data came from.</summary>
    public string Source { get; }

    /// <summary>Number of samples (the shared dim 0).</summary>
    public int SampleCount { get; }

    /// <summary>The data input names, in the order given.</summary>
    public IReadOnlyList<string> InputNames => _columns.Where(c => !c.IsLabel).Select(c => c.Name).ToArray();

    /// <summary>The label tensor name (null when the loss needs no labels).</summary>
    public string? LabelName => _columns.FirstOrDefault(c => c.IsLabel)?.Name;

    /// <summary>Reads <paramref name="path"/> and selects the tensors an artifacts folder trains on.</summary>
    /// <exception cref="DataFileException">A tensor is missing or does not fit the manifest.</exception>
    /// <exception cref="SafeTensorsFormatException">The file is missing or malformed.</exception>
    public static TensorDataFile Open(string path, ArtifactManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        return FromFile(SafeTensorsFile.Read(path), path, manifest);
    }

    /// <summary>Selects the tensors an artifacts folder trains on from an already-read file.</summary>
    /// <exception cref="DataFileException">A tensor is missing or does not fit the manifest.</exception>
    public static TensorDataFile FromFile(SafeTensorsFile file, string sourceName, ArtifactManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var specs = manifest.Inputs.Select(i => (i.Name, (string?)i.ElementType, (IReadOnlyList<string>?)i.Shape)).ToList();
        string? label = manifest.Loss.Kind == LossKind.None ? null : manifest.Loss.LabelName;
        return Create(file, sourceName, specs, label is null ? null : (label, manifest.Loss.LabelElementType));
    }

    /// <summary>Selects tensors by name without a manifest (types and shapes are only checked for consistency).</summary>
    /// <exception cref="DataFileException">A tensor is missing, has an unsupported type or a different dim 0.</exception>
    public static TensorDataFile FromFile(SafeTensorsFile file, string sourceName, IEnumerable<string> inputNames, string? labelName)
    {
        ArgumentNullException.ThrowIfNull(inputNames);
        var specs = inputNames.Select(n => (n, (string?)null, (IReadOnlyList<string>?)null)).ToList();
        return Create(file, sourceName, specs, labelName is null ? null : (labelName, null));
    }

    private static TensorDataFile Create(SafeTensorsFile file, string source,
        List<(string Name, string? ElementType, IReadOnlyList<string>? Shape)> inputs, (string Name, string? ElementType)? label)
    {
        ArgumentNullException.ThrowIfNull(file);
        var wanted = inputs.Select(i => (i.Name, i.ElementType, i.Shape, IsLabel: false)).ToList();
        if (label is { } l) wanted.Add((l.Name, l.ElementType, null, true));
        if (wanted.Count == 0)
            throw new DataFileException("", $"Data file '{source}': the model has no data inputs and no labels, so there is nothing to read.");

        var columns = new List<Column>();
        foreach (var (name, elementType, shape, isLabel) in wanted)
        {
            var t = file.Find(name) ?? throw new DataFileException(name,
                $"Data file '{source}' has no tensor '{name}' ({(isLabel ? "the labels" : "a model input")}); it holds: {Describe(file)}.");
            if (t.Shape.Length == 0)
                throw new DataFileException(name, $"Data tensor '{name}' in '{source}' is a scalar; every tensor must be batched on dim 0.");
            if (t.DType is not (SafeTensorDType.F32 or SafeTensorDType.I64 or SafeTensorDType.Bool))
                throw new DataFileException(name, $"Data tensor '{name}' in '{source}' holds {t.DType}; use F32 for float inputs, I64 for integer inputs and class labels, BOOL for masks.");
            if (isLabel && t.DType == SafeTensorDType.Bool)
                throw new DataFileException(name, $"Label tensor '{name}' in '{source}' holds BOOL values; labels must be I64 class indices or F32 targets.");
            if (elementType is not null && ElementTypeOf(t.DType) != elementType)
                throw new DataFileException(name, $"Data tensor '{name}' in '{source}' holds {t.DType} ({ElementTypeOf(t.DType)}), but the model expects {elementType} for {(isLabel ? "the labels" : "that input")}.");
            if (shape is not null)
                CheckShape(source, name, t.Shape, shape);
            // With 0 samples the file holds no bytes, so the dims after 0 were never bounded by the data size.
            long rowElements = 1;
            foreach (var d in t.Shape.Skip(1))
                if (d != 0 && rowElements > int.MaxValue / d) { rowElements = -1; break; }
                else rowElements *= d;
            if (rowElements < 0 || rowElements > int.MaxValue)
                throw new DataFileException(name, $"Data tensor '{name}' in '{source}' has shape [{string.Join(",", t.Shape)}]: one sample would hold more than {int.MaxValue} values.");
            columns.Add(new Column(name, t, isLabel, (int)rowElements));
        }

        var first = columns[0];
        foreach (var c in columns)
            if (c.Tensor.Shape[0] != first.Tensor.Shape[0])
                throw new DataFileException(c.Name,
                    $"Data tensors disagree on dim 0 (the sample count) in '{source}': '{first.Name}' has {first.Tensor.Shape[0]} samples, '{c.Name}' has {c.Tensor.Shape[0]}.");
        if (first.Tensor.Shape[0] > int.MaxValue)
            throw new DataFileException(first.Name, $"Data file '{source}' has {first.Tensor.Shape[0]} samples; at most {int.MaxValue} are supported.");
        var count = (int)first.Tensor.Shape[0];
        if (count == 0)
            throw new DataFileException(first.Name, $"Data file '{source}' holds 0 samples.");

        foreach (var c in columns.Where(c => c.Tensor.DType == SafeTensorDType.F32))
        {
            var data = c.Tensor.AsSpan<float>();
            for (var i = 0; i < data.Length; i++)
                if (!float.IsFinite(data[i]))
                    throw new DataFileException(c.Name,
                        $"Data tensor '{c.Name}' in '{source}' holds {data[i]} at sample {i / Math.Max(1, c.RowElements)} (flat index {i}); data must be finite.");
        }
        return new TensorDataFile(source, columns, count);
    }

    /// <summary>Gathers the rows <paramref name="indices"/> of every tensor into a new batch (the batch owns copies).</summary>
    /// <exception cref="ArgumentOutOfRangeException">An index is outside [0, <see cref="SampleCount"/>).</exception>
    public TrainingBatch CreateBatch(ReadOnlySpan<int> indices)
    {
        foreach (var i in indices)
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)i, (uint)SampleCount, nameof(indices));
        var batch = new TrainingBatch();
        foreach (var c in _columns)
        {
            var shape = (long[])c.Tensor.Shape.Clone();
            shape[0] = indices.Length;
            switch (c.Tensor.DType)
            {
                case SafeTensorDType.F32:
                    {
                        var rows = Gather(c.Tensor.AsSpan<float>(), c.RowElements, indices);
                        if (c.IsLabel) batch.WithLabels(rows, shape); else batch.Add(c.Name, rows, shape);
                        break;
                    }
                case SafeTensorDType.I64:
                    {
                        var rows = Gather(c.Tensor.AsSpan<long>(), c.RowElements, indices);
                        if (c.IsLabel) batch.WithLabels(rows, shape); else batch.Add(c.Name, rows, shape);
                        break;
                    }
                default:
                    {
                        var rows = Gather(MemoryMarshal.Cast<byte, bool>(c.Tensor.Data), c.RowElements, indices);
                        batch.Add(c.Name, rows, shape);
                        break;
                    }
            }
        }
        return batch;
    }

    private static T[] Gather<T>(ReadOnlySpan<T> source, int rowElements, ReadOnlySpan<int> indices) where T : unmanaged
    {
        var result = new T[indices.Length * rowElements];
        for (var r = 0; r < indices.Length; r++)
            source.Slice(indices[r] * rowElements, rowElements).CopyTo(result.AsSpan(r * rowElements, rowElements));
        return result;
    }

    private static void CheckShape(string source, string name, long[] actual, IReadOnlyList<string> expected)
    {
        if (actual.Length != expected.Count)
            throw new DataFileException(name,
                $"Data tensor '{name}' in '{source}' has shape [{string.Join(",", actual)}] (rank {actual.Length}), but the model input is [{string.Join(",", expected)}] (rank {expected.Count}).");
        for (var i = 1; i < actual.Length; i++)
            if (long.TryParse(expected[i], out var fixedDim) && fixedDim != actual[i])
                throw new DataFileException(name,
                    $"Data tensor '{name}' in '{source}' has {actual[i]} at dim {i} (shape [{string.Join(",", actual)}]), but the model input fixes it to {fixedDim} ([{string.Join(",", expected)}]).");
    }

    private static string ElementTypeOf(SafeTensorDType d) => d switch
    {
        SafeTensorDType.F32 => "float",
        SafeTensorDType.F64 => "double",
        SafeTensorDType.I64 => "int64",
        SafeTensorDType.I32 => "int32",
        _ => "bool",
    };

    private static string Describe(SafeTensorsFile file) =>
        file.Tensors.Count == 0
            ? "no tensors"
            : string.Join(", ", file.Tensors.Take(12).Select(t => $"{t.Name} {t.DType}[{string.Join(",", t.Shape)}]")) + (file.Tensors.Count > 12 ? ", ..." : "");
}

/// <summary>A data file does not fit the model: a missing tensor, wrong type or shape, different sample counts, or a
/// non-finite value. <see cref="TensorName"/> names the tensor.</summary>
public sealed class DataFileException : OnnxTuneException
{
    /// <summary>Creates the exception for the tensor <paramref name="tensorName"/>.</summary>
    public DataFileException(string tensorName, string message) : base(message) => TensorName = tensorName;

    /// <summary>The tensor at fault (empty when none).</summary>
    public string TensorName { get; }
}
