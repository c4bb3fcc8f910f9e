using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Training;

/// <summary>The data and label inputs of one graph; validates batches and wraps their memory as <see cref="OrtValue"/>s.</summary>
internal sealed class BatchSchema
{
    private readonly IReadOnlyList<InputSpec> _inputs;
    private readonly string? _labelName;
    private readonly long? _classCount;
    private readonly long? _ignoreIndex;
    private readonly string _graph;

    private BatchSchema(IReadOnlyList<InputSpec> inputs, string? labelName, long? classCount, long? ignoreIndex, string graph)
    {
        _inputs = inputs;
        _labelName = labelName;
        _classCount = classCount;
        _ignoreIndex = ignoreIndex;
        _graph = graph;
    }

    private enum Role { Data, Label, Weight, Teacher, DistillationFactor }

    private sealed record InputSpec(string Name, TensorElementType Type, int[] Dims, string[] Symbols, bool IsLabel, bool IsWeight = false, Role Kind = Role.Data);

    private float[] _ones = [];
    private float[] _zeros = [];

    public static BatchSchema Create(ArtifactManifest manifest, InferenceSession session, string graph)
    {
        var specs = new List<InputSpec>();
        foreach (var input in manifest.Inputs)
            if (session.InputMetadata.TryGetValue(input.Name, out var meta))
                specs.Add(new InputSpec(input.Name, meta.ElementDataType, meta.Dimensions, meta.SymbolicDimensions, false));
        string? label = null;
        if (manifest.Loss.Kind != LossKind.None && manifest.Loss.LabelName is { } l)
        {
            if (!session.InputMetadata.TryGetValue(l, out var meta))
                throw new InvalidArtifactsException($"The {graph} graph has no label input '{l}' although the loss is {manifest.Loss.Kind}.");
            specs.Add(new InputSpec(l, meta.ElementDataType, meta.Dimensions, meta.SymbolicDimensions, true));
            label = l;
        }
        if (manifest.Loss.SampleWeightName is { } w && session.InputMetadata.TryGetValue(w, out var wm))
            specs.Add(new InputSpec(w, wm.ElementDataType, wm.Dimensions, wm.SymbolicDimensions, false, IsWeight: true, Kind: Role.Weight));
        if (manifest.Loss.DistillationTargetName is { } t && session.InputMetadata.TryGetValue(t, out var tm))
            specs.Add(new InputSpec(t, tm.ElementDataType, tm.Dimensions, tm.SymbolicDimensions, false, Kind: Role.Teacher));
        if (manifest.Loss.DistillationWeightName is { } a && session.InputMetadata.TryGetValue(a, out var am))
            specs.Add(new InputSpec(a, am.ElementDataType, am.Dimensions, am.SymbolicDimensions, false, Kind: Role.DistillationFactor));
        long? classes = null;
        if (manifest.Loss.Kind == LossKind.CrossEntropy
            && manifest.Outputs.FirstOrDefault(o => o.Name == manifest.Loss.OutputName) is { Shape.Count: > 0 } output
            && output.FixedDims[^1] > 0)
            classes = output.FixedDims[^1];
        return new BatchSchema(specs, label, classes, manifest.Loss.IgnoreIndex, graph);
    }

    /// <summary>Validates the batch and wraps each tensor (caller disposes the values).</summary>
    public List<(string Name, OrtValue Value)> Wrap(TrainingBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var chosen = new List<(InputSpec Spec, BatchTensor Tensor)>(_inputs.Count);
        var symbols = new Dictionary<string, (long Value, string Input)>(StringComparer.Ordinal);
        foreach (var spec in _inputs)
        {
            BatchTensor? t;
            if (spec.IsLabel)
                t = batch.Labels ?? batch.Inputs.GetValueOrDefault(spec.Name);
            else if (spec.IsWeight)
                t = batch.SampleWeights ?? batch.Inputs.GetValueOrDefault(spec.Name) ?? Ones(spec, batch.Labels);
            else if (spec.Kind == Role.Teacher)
                t = batch.TeacherScores ?? batch.Inputs.GetValueOrDefault(spec.Name) ?? Zeros(batch.Labels, spec.Dims.Length == 2 && spec.Dims[1] > 0 ? spec.Dims[1] : 0);
            else if (spec.Kind == Role.DistillationFactor)
                t = batch.DistillationFactors ?? batch.Inputs.GetValueOrDefault(spec.Name) ?? Zeros(batch.Labels, 0);
            else
                batch.Inputs.TryGetValue(spec.Name, out t);
            if (t is null)
                throw new BatchValidationException(spec.Name, spec.IsLabel
                    ? $"The batch has no labels; the {_graph} graph reads them as '{spec.Name}' ({spec.Type}{FormatDims(spec)})."
                    : $"The batch has no input '{spec.Name}' ({spec.Type}{FormatDims(spec)}), which the {_graph} graph needs.");
            Check(spec, t, symbols);
            chosen.Add((spec, t));
        }
        foreach (var name in batch.Inputs.Keys)
            if (!_inputs.Any(s => s.Name == name))
                throw new BatchValidationException(name, $"The batch input '{name}' is not an input of the {_graph} graph (its inputs: {string.Join(", ", _inputs.Select(s => s.Name))}).");

        var values = new List<(string, OrtValue)>(chosen.Count);
        try
        {
            foreach (var (spec, t) in chosen) values.Add((spec.Name, t.ToOrtValue()));
        }
        catch
        {
            foreach (var (_, v) in values) v.Dispose();
            throw;
        }
        return values;
    }

    // Without weights every example counts once: a reused buffer of ones in the labels' shape.
    private BatchTensor? Ones(InputSpec spec, BatchTensor? labels)
    {
        if (labels is null) return null;
        var n = (int)labels.Length;
        if (_ones.Length < n) { _ones = new float[n]; Array.Fill(_ones, 1f); }
        return BatchTensor.Create(_ones.AsMemory(0, n), labels.Shape);
    }

    // Without teacher scores nothing is distilled: zero factors (and zero scores, which the factors cancel).
    private BatchTensor? Zeros(BatchTensor? labels, int columns)
    {
        if (labels is null || labels.Shape.Length == 0) return null;
        var rows = (int)labels.Shape[0];
        var n = columns > 0 ? rows * columns : rows;
        if (_zeros.Length < n) _zeros = new float[n];
        return BatchTensor.Create(_zeros.AsMemory(0, n), columns > 0 ? [rows, columns] : [rows]);
    }

    private void Check(InputSpec spec, BatchTensor t, Dictionary<string, (long Value, string Input)> symbols)
    {
        var name = spec.Name;
        if (t.ElementType != spec.Type)
            throw new BatchValidationException(name, $"Batch input '{name}' holds {t.ElementType} values, but the {_graph} graph expects {spec.Type}.");
        if (t.Shape.Length != spec.Dims.Length)
            throw new BatchValidationException(name, $"Batch input '{name}' has rank {t.Shape.Length} (shape [{string.Join(",", t.Shape)}]), but the {_graph} graph expects rank {spec.Dims.Length}{FormatDims(spec)}.");
        long count = 1;
        for (var i = 0; i < t.Shape.Length; i++)
        {
            var d = t.Shape[i];
            if (d < 0)
                throw new BatchValidationException(name, $"Batch input '{name}' has negative dim {i} ({d}).");
            count *= d;
            if (spec.Dims[i] >= 0)
            {
                if (d != spec.Dims[i])
                    throw new BatchValidationException(name, $"Batch input '{name}' has {d} at dim {i}, but the {_graph} graph fixes it to {spec.Dims[i]}{FormatDims(spec)}.");
            }
            else if (!string.IsNullOrEmpty(spec.Symbols[i]))
            {
                if (symbols.TryGetValue(spec.Symbols[i], out var seen) && seen.Value != d)
                    throw new BatchValidationException(name, $"Batch input '{name}' has {d} at dim {i} ('{spec.Symbols[i]}'), but '{seen.Input}' has {seen.Value} for the same dim.");
                symbols[spec.Symbols[i]] = (d, name);
            }
        }
        if (count != t.Length)
            throw new BatchValidationException(name, $"Batch input '{name}' has {t.Length} values, but its shape [{string.Join(",", t.Shape)}] needs {count}.");
        if (t.ElementType == TensorElementType.Float)
        {
            var data = t.Floats;
            if (data.Length > 0 && !float.IsFinite(TensorPrimitives.Sum(data)))
                for (var i = 0; i < data.Length; i++)
                    if (!float.IsFinite(data[i]))
                        throw new BatchValidationException(name, $"Batch input '{name}' holds {data[i]} at flat index {i}; inputs must be finite.");
            if ((spec.IsWeight || spec.Kind == Role.DistillationFactor) && data.Length > 0 && TensorPrimitives.Min(data) < 0)
                throw new BatchValidationException(name, $"Sample weights '{name}' hold a negative value ({TensorPrimitives.Min(data)}); weights must be >= 0.");
        }
        if (spec.IsLabel && _classCount is { } classes && t.ElementType == TensorElementType.Int64 && t.Length > 0)
        {
            var labels = t.Int64s;
            if (TensorPrimitives.Min(labels) < 0 || TensorPrimitives.Max(labels) >= classes)
                for (var i = 0; i < labels.Length; i++)
                    if ((labels[i] < 0 || labels[i] >= classes) && labels[i] != _ignoreIndex)
                        throw new BatchValidationException(name, $"Label {labels[i]} at flat index {i} is outside the {classes} classes [0, {classes - 1}]{(_ignoreIndex is { } ig ? $" and is not the ignore index {ig}" : "")}.");
        }
    }

    private static string FormatDims(InputSpec spec) =>
        $", shape [{string.Join(",", spec.Dims.Select((d, i) => d >= 0 ? d.ToString() : string.IsNullOrEmpty(spec.Symbols[i]) ? "?" : spec.Symbols[i]))}]";
}
