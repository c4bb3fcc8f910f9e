using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Training.Trained;

/// <summary>
/// A model trained offline, in the folder layout <c>onnxtune train --out</c> writes and hosting's
/// <c>TrainedModelPath</c> reads: <c>model.onnx</c> (the exported inference model), <c>checkpoint/</c> (its
/// parameters and optimizer state) and optionally <c>replay.jsonl</c> (a class-balanced sample of its training data).
/// </summary>
public static class TrainedModelFolder
{
    /// <summary>The exported inference model.</summary>
    public const string ModelFileName = "model.onnx";

    /// <summary>The checkpoint folder.</summary>
    public const string CheckpointFolderName = "checkpoint";

    /// <summary>The replay set: JSON lines <c>{"text": ..., "label": ...}</c>.</summary>
    public const string ReplaySetFileName = "replay.jsonl";

    /// <summary>Writes the session's checkpoint and exported inference model into <paramref name="directory"/>.</summary>
    public static void Save(TrainingEngine session, string directory, IReadOnlyDictionary<string, string>? properties = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory.CreateDirectory(directory);
        session.SaveCheckpoint(Path.Combine(directory, CheckpointFolderName), properties);
        session.ExportInferenceModel(Path.Combine(directory, ModelFileName));
    }

    /// <summary>
    /// Writes up to <paramref name="perClass"/> labelled texts per label (a seeded, class-balanced sample, in input
    /// order) as <see cref="ReplaySetFileName"/> lines; returns how many were written.
    /// </summary>
    public static int WriteTextReplaySet(string path, IEnumerable<(string Text, string Label)> examples, int perClass, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfNegative(perClass);
        var all = examples.Select((e, i) => (e.Text, e.Label, Index: i)).ToList();
        var rng = new Random(seed);
        var chosen = all.GroupBy(e => e.Label, StringComparer.Ordinal)
            .SelectMany(g =>
            {
                var items = g.ToArray();
                rng.Shuffle(items);
                return items.Take(perClass);
            })
            .OrderBy(e => e.Index)
            .ToList();
        using var writer = new StringWriter();
        foreach (var (text, label, _) in chosen)
            writer.WriteLine(JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = text, ["label"] = label }));
        AtomicFile.WriteAllText(path, writer.ToString());
        return chosen.Count;
    }

    /// <summary>
    /// Checks that a trained folder fits the artifacts and is consistent: the checkpoint holds exactly the artifacts'
    /// trainable parameters, and every one of them equals the initializer of that name in <c>model.onnx</c>.
    /// </summary>
    /// <exception cref="TrainedModelMismatchException">A file is missing, or the model and checkpoint disagree (names the first tensor).</exception>
    public static void Verify(string directory, ArtifactManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var modelPath = Path.Combine(directory, ModelFileName);
        var checkpointPath = Path.Combine(directory, CheckpointFolderName);
        if (!File.Exists(modelPath))
            throw new TrainedModelMismatchException($"Trained model folder '{directory}' has no {ModelFileName}.");
        if (!CheckpointStore.Exists(checkpointPath))
            throw new TrainedModelMismatchException($"Trained model folder '{directory}' has no {CheckpointFolderName}/ (checkpoint.json and tensors).");
        var (meta, tensors) = CheckpointStore.Load(checkpointPath);
        var expected = manifest.TrainableParameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var actual = meta.Parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        if (expected.FirstOrDefault(n => !actual.Contains(n)) is { } missing)
            throw new TrainedModelMismatchException($"'{checkpointPath}' has no parameter '{missing}', which the artifacts train; the folder was trained from other artifacts.");
        if (actual.FirstOrDefault(n => !expected.Contains(n)) is { } extra)
            throw new TrainedModelMismatchException($"'{checkpointPath}' holds parameter '{extra}', which the artifacts do not train; the folder was trained from other artifacts.");
        var model = OnnxModelReader.Load(modelPath);
        var initializers = model.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var name in expected)
        {
            if (!initializers.TryGetValue(name, out var initializer))
                throw new TrainedModelMismatchException($"'{modelPath}' has no initializer '{name}' for the trained parameter of that name.");
            var stored = tensors.Get(name).ToFloatArray();
            var served = TensorProtos.ToFloatArray(initializer);
            if (stored.Length != served.Length)
                throw new TrainedModelMismatchException($"'{name}' has {served.Length} values in '{modelPath}' but {stored.Length} in '{checkpointPath}'.");
            for (var i = 0; i < stored.Length; i++)
                if (BitConverter.SingleToInt32Bits(stored[i]) != BitConverter.SingleToInt32Bits(served[i]))
                    throw new TrainedModelMismatchException(
                        $"'{name}' differs between '{modelPath}' and '{checkpointPath}' (first at flat index {i}: {served[i]} vs {stored[i]}); the model was not exported from this checkpoint.");
        }
    }
}

/// <summary>A trained model folder does not fit its artifacts, or its model and checkpoint disagree.</summary>
public sealed class TrainedModelMismatchException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public TrainedModelMismatchException(string message) : base(message) { }
}
