using System.Globalization;
using Microsoft.Extensions.Logging;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training;
using OnnxTune.Training.Checkpoints;
using TrainingSession = OnnxTune.Training.TrainingSession;

namespace OnnxTune.Hosting.Training;

/// <summary>
/// The default fine-tuning engine: one <see cref="TrainingSession"/> over the artifacts, started from the serving
/// version's checkpoint (parameters and optimizer state; the artifacts' initial weights for the base model), trained
/// for the round's epochs over the new feedback plus the replay sample, then checkpointed and exported into the
/// round's working directory. Records are encoded by the model's <see cref="IFeedbackEncoder"/>; each record is one
/// example (leading dim 1) and records with equal non-batch shapes are stacked into batches. Labels are the class
/// indices (int64) of a cross-entropy loss. Cancellation is honoured between steps; nothing is written before
/// training ends.
/// </summary>
internal sealed partial class TrainingSessionFineTuningRound(IFeedbackEncoder encoder, ILogger logger) : IFineTuningRound
{
    /// <summary>Candidate inference model file inside the working directory.</summary>
    internal const string CandidateModelFileName = "model.onnx";

    /// <summary>Candidate checkpoint folder inside the working directory.</summary>
    internal const string CandidateCheckpointFolderName = "checkpoint";

    public Task<FineTuningRoundResult> RunAsync(FineTuningRoundInput input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        cancellationToken.ThrowIfCancellationRequested();
        // Training is CPU-bound for the whole round: keep it off the thread pool.
        return Task.Factory.StartNew(() => Run(input, cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    private FineTuningRoundResult Run(FineTuningRoundInput input, CancellationToken ct)
    {
        var manifest = input.Manifest;
        if (manifest.Loss.Kind != LossKind.CrossEntropy || manifest.Loss.LabelName is null)
            throw new OnnxTuneException(
                $"Model '{input.ModelName}': the artifacts' loss is {manifest.Loss.Kind}; feedback rounds train class-index labels and need a cross-entropy loss with a label input.");
        if (input.BatchSize < 1) throw new OnnxTuneException($"Model '{input.ModelName}': BatchSize is {input.BatchSize}; it must be at least 1.");
        if (input.Epochs < 1) throw new OnnxTuneException($"Model '{input.ModelName}': EpochsPerRound is {input.Epochs}; it must be at least 1.");

        var examples = Encode(input, out var skipped);
        if (examples.Count == 0)
            throw new OnnxTuneException($"Model '{input.ModelName}': round {input.Round} has no record to train on ({skipped} records have weight 0).");
        var batchSize = Math.Min(input.BatchSize, MaxBatch(manifest));

        var checkpoint = CheckpointStore.Exists(input.ServingCheckpointPath) ? input.ServingCheckpointPath : null;
        using var session = TrainingSession.Open(input.ArtifactsPath, new TrainingSessionOptions
        {
            IntraOpThreads = input.ThreadBudget,
            InterOpThreads = 1,
            CheckpointDirectory = checkpoint,
            Seed = unchecked((int)input.Round),
        });
        if (checkpoint is null) LoadServingWeights(session, input);
        session.Schedule = null;
        session.LearningRate = input.LearningRate;
        var startStep = session.Step;
        LogRoundTraining(logger, input.ModelName, input.Round, examples.Count, skipped, input.Epochs, batchSize, input.LearningRate,
            checkpoint ?? input.ServingModelPath, input.ThreadBudget);

        var rng = new Random(unchecked((int)input.Round));
        var order = Enumerable.Range(0, examples.Count).ToArray();
        var buffers = new BatchBuffers();
        double lastEpochLoss = double.NaN;
        for (var epoch = 1; epoch <= input.Epochs; epoch++)
        {
            ct.ThrowIfCancellationRequested();
            rng.Shuffle(order);
            // Records of equal shape are stacked; each shape group is cut into batches, and batch order is shuffled.
            var batches = order.GroupBy(i => examples[i].Signature, StringComparer.Ordinal)
                .SelectMany(g => g.Chunk(batchSize))
                .ToArray();
            rng.Shuffle(batches);
            double lossSum = 0;
            long count = 0;
            foreach (var members in batches)
            {
                ct.ThrowIfCancellationRequested();
                var loss = session.TrainStep(buffers.Build(examples, members));
                if (!float.IsFinite(loss))
                    throw new OnnxTuneException(
                        $"Model '{input.ModelName}': round {input.Round} training loss became {loss} at epoch {epoch}, step {session.Step - startStep + 1} (learning rate {input.LearningRate}).");
                session.OptimizerStep();
                lossSum += (double)loss * members.Length;
                count += members.Length;
            }
            lastEpochLoss = lossSum / count;
            LogEpoch(logger, input.ModelName, input.Round, epoch, lastEpochLoss, session.Step - startStep);
        }

        ct.ThrowIfCancellationRequested();
        var checkpointDir = Path.Combine(input.WorkingDirectory, CandidateCheckpointFolderName);
        var modelPath = Path.Combine(input.WorkingDirectory, CandidateModelFileName);
        session.SaveCheckpoint(checkpointDir, new Dictionary<string, string>
        {
            ["model"] = input.ModelName,
            ["round"] = input.Round.ToString(CultureInfo.InvariantCulture),
            ["records"] = examples.Count.ToString(CultureInfo.InvariantCulture),
        });
        session.ExportInferenceModel(modelPath);
        return new FineTuningRoundResult(modelPath, checkpointDir, lastEpochLoss, session.Step - startStep);
    }

    private List<Example> Encode(FineTuningRoundInput input, out int skipped)
    {
        var examples = new List<Example>(input.NewFeedback.Count + input.ReplaySample.Count);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        skipped = 0;
        foreach (var record in input.NewFeedback.Concat(input.ReplaySample))
        {
            if (!seen.Add(record.Id)) continue;
            // The artifacts' loss is a plain mean, so only weight 0 (exclude) can be honoured.
            if (record.Weight == 0)
            {
                skipped++;
                continue;
            }
            IReadOnlyDictionary<string, TensorData> tensors;
            var signature = new System.Text.StringBuilder();
            try
            {
                tensors = encoder.Encode(record);
                foreach (var (name, t) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    if (t.Shape.Count == 0 || t.Shape[0] != 1)
                        throw new OnnxTuneException(
                            $"Model '{input.ModelName}': feedback record {record.Id}: tensor '{name}' has shape [{string.Join(",", t.Shape)}]; a record holds one example, so its leading (batch) dim must be 1.");
                    signature.Append(name).Append(':').Append(t.ElementType).Append(':');
                    for (var d = 1; d < t.Shape.Count; d++) signature.Append(t.Shape[d]).Append(',');
                    signature.Append(';');
                }
            }
            catch (Exception e) when (input.RecordFailed is { } failed && e is not OperationCanceledException and not OutOfMemoryException)
            {
                // One unusable record must not fail the round: report it (the caller quarantines it) and go on.
                failed(record, e);
                skipped++;
                continue;
            }
            examples.Add(new Example(tensors, record.LabelIndex, signature.ToString()));
        }
        return examples;
    }

    /// <summary>A fixed leading dim on any data input caps the batch (usually 1); symbolic dims do not.</summary>
    private static int MaxBatch(ArtifactManifest manifest)
    {
        var max = int.MaxValue;
        foreach (var input in manifest.Inputs)
            if (input.FixedDims is [> 0 and var d, ..])
                max = (int)Math.Min(max, d);
        return max;
    }

    /// <summary>Without a checkpoint, start from the serving model's weights when it is not the artifacts' base model.</summary>
    private static void LoadServingWeights(TrainingSession session, FineTuningRoundInput input)
    {
        var basePath = Path.GetFullPath(Path.Combine(input.ArtifactsPath, input.Manifest.Files.InferenceModel));
        if (string.Equals(Path.GetFullPath(input.ServingModelPath), basePath, StringComparison.Ordinal)) return;
        var model = OnnxModelReader.Load(input.ServingModelPath);
        var initializers = model.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var name in session.ParameterNames)
        {
            if (!initializers.TryGetValue(name, out var t))
                throw new OnnxTuneException(
                    $"Model '{input.ModelName}': serving model '{input.ServingModelPath}' has no initializer '{name}' for the trainable parameter of that name, and no checkpoint to start from.");
            session.SetParameter(name, TensorProtos.ToFloatArray(t));
        }
    }

    private sealed record Example(IReadOnlyDictionary<string, TensorData> Tensors, long Label, string Signature);

    /// <summary>Stacks records into reused buffers (the session wraps them without copying).</summary>
    private sealed class BatchBuffers
    {
        private readonly Dictionary<string, float[]> _floats = new(StringComparer.Ordinal);
        private readonly Dictionary<string, long[]> _longs = new(StringComparer.Ordinal);
        private long[] _labels = [];

        public TrainingBatch Build(List<Example> examples, int[] members)
        {
            var n = members.Length;
            var first = examples[members[0]].Tensors;
            var batch = new TrainingBatch();
            foreach (var (name, t) in first)
            {
                var per = t.Length;
                var shape = new long[t.Shape.Count];
                shape[0] = n;
                for (var d = 1; d < shape.Length; d++) shape[d] = t.Shape[d];
                if (t.ElementType == TensorDataType.Float)
                {
                    var buffer = Rent(_floats, name, n * per);
                    for (var i = 0; i < n; i++) examples[members[i]].Tensors[name].FloatData!.CopyTo(buffer, i * per);
                    batch.Add(name, buffer.AsMemory(0, n * per), shape);
                }
                else
                {
                    var buffer = Rent(_longs, name, n * per);
                    for (var i = 0; i < n; i++) examples[members[i]].Tensors[name].Int64Data!.CopyTo(buffer, i * per);
                    batch.Add(name, buffer.AsMemory(0, n * per), shape);
                }
            }
            if (_labels.Length < n) _labels = new long[n];
            for (var i = 0; i < n; i++) _labels[i] = examples[members[i]].Label;
            return batch.WithLabels(_labels.AsMemory(0, n), n);
        }

        private static T[] Rent<T>(Dictionary<string, T[]> pool, string name, int length)
        {
            if (!pool.TryGetValue(name, out var buffer) || buffer.Length < length)
                pool[name] = buffer = new T[length];
            return buffer;
        }
    }

    [LoggerMessage(4050, LogLevel.Information,
        "Model '{Model}': round {Round} trains on {Records} records ({Skipped} with weight 0 skipped), {Epochs} epochs, batch {BatchSize}, learning rate {LearningRate}, from {Start}, {Threads} threads.")]
    private static partial void LogRoundTraining(ILogger logger, string model, long round, int records, int skipped, int epochs, int batchSize, double learningRate, string start, int threads);

    [LoggerMessage(4051, LogLevel.Debug, "Model '{Model}': round {Round} epoch {Epoch} mean loss {Loss:F5} after {Steps} steps.")]
    private static partial void LogEpoch(ILogger logger, string model, long round, int epoch, double loss, long steps);
}
