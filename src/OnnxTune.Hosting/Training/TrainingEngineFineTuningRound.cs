using System.Globalization;
using Microsoft.Extensions.Logging;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting.Internal;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training;
using OnnxTune.Training.Caching;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.Loops;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.Sessions;

namespace OnnxTune.Hosting.Training;

/// <summary>
/// The default fine-tuning engine: one <see cref="TrainingEngine"/> over the artifacts, started from the serving
/// version's checkpoint (parameters and optimizer state; the artifacts' initial weights for the base model), trained
/// for the round's epochs over the new feedback plus the replay sample, then checkpointed and exported into the
/// round's working directory. Records are encoded by the model's <see cref="IFeedbackEncoder"/>; each record is one
/// example (leading dim 1) and records with equal non-batch shapes are stacked into batches. Labels are the class
/// indices (int64) of a cross-entropy loss. Cancellation is honoured between steps; nothing is written before
/// training ends.
/// </summary>
internal sealed partial class TrainingEngineFineTuningRound(IFeedbackEncoder encoder, ILogger logger) : IFineTuningRound
{
    /// <summary>Candidate inference model file inside the working directory.</summary>
    internal const string CandidateModelFileName = "model.onnx";

    /// <summary>Candidate checkpoint folder inside the working directory.</summary>
    internal const string CandidateCheckpointFolderName = "checkpoint";

    public Task<FineTuningRoundResult> RunAsync(FineTuningRoundInput input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        cancellationToken.ThrowIfCancellationRequested();
        // Training is CPU-bound for the whole round: keep it off the thread pool, on a dedicated thread (it ends with
        // the round, so its lowered priority never reaches other work) that yields the cores to serving.
        return Task.Factory.StartNew(() =>
        {
            BackgroundThreadPriority.Lower(input.TrainingNiceness);
            if (input.TrainingIdlePriority) BackgroundThreadPriority.Idle();
            return Run(input, cancellationToken);
        }, cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    private FineTuningRoundResult Run(FineTuningRoundInput input, CancellationToken ct)
    {
        var manifest = input.Manifest;
        if (manifest.Loss.Kind != LossKind.CrossEntropy || manifest.Loss.LabelName is null)
            throw new OnnxTuneException(
                $"Model '{input.ModelName}': the artifacts' loss is {manifest.Loss.Kind}; feedback rounds train class-index labels and need a cross-entropy loss with a label input.");
        if (input.BatchSize < 1) throw new OnnxTuneException($"Model '{input.ModelName}': BatchSize is {input.BatchSize}; it must be at least 1.");
        if (input.Epochs < 1) throw new OnnxTuneException($"Model '{input.ModelName}': EpochsPerRound is {input.Epochs}; it must be at least 1.");

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var examples = Encode(input, out var skipped);
        var encodeTime = clock.Elapsed;
        var distill = input.DistillationWeight > 0 && manifest.Loss.DistillationTargetName is not null && input.ReplaySample.Count > 0;
        if (distill) TeacherScores.Fill(examples, input.ServingModelPath, manifest.Loss.OutputName, input.ThreadBudget, input.DistillationWeight, ct);
        var teacherTime = clock.Elapsed - encodeTime;
        if (examples.Count == 0)
            throw new OnnxTuneException($"Model '{input.ModelName}': round {input.Round} has no record to train on ({skipped} records have weight 0).");
        var batchSize = Math.Min(input.BatchSize, MaxBatch(manifest));

        var checkpoint = CheckpointStore.Exists(input.ServingCheckpointPath) ? input.ServingCheckpointPath : null;
        string? declined = null;
        var prefix = input.PrefixCacheDirectory is { } cacheRoot ? PrefixCachedArtifacts.Prepare(input.ArtifactsPath, manifest, cacheRoot, out declined) : null;
        if (declined is not null) LogNoPrefixCache(logger, input.ModelName, declined);
        using var session = TrainingEngine.Open(prefix?.ArtifactsDirectory ?? input.ArtifactsPath, new TrainingEngineOptions
        {
            IntraOpThreads = input.ThreadBudget,
            InterOpThreads = 1,
            CheckpointDirectory = checkpoint,
            Seed = unchecked((int)input.Round),
            LearningRateScales = EncoderScales(manifest, input),
        });
        if (checkpoint is null) LoadServingWeights(session, input);
        session.Schedule = null;
        session.LearningRate = input.LearningRate;
        var startStep = session.Step;
        LogRoundTraining(logger, input.ModelName, input.Round, examples.Count, skipped, input.Epochs, batchSize, input.LearningRate,
            checkpoint ?? input.ServingModelPath, input.ThreadBudget);

        var buffers = new BatchBuffers(manifest.Loss.SampleWeightName is not null, distill);
        using var cache = prefix?.OpenCache(input.ThreadBudget);
        Func<int[], TrainingBatch> createBatch = members => buffers.Build(examples, members);
        CacheBuildResult? build = null;
        var cacheStarted = clock.Elapsed;
        if (cache is not null)
        {
            // The frozen layers run once per record not seen in earlier rounds; the file keeps only this round's records.
            var cached = examples.Select(e => e.ToCacheExample()).ToList();
            var dropped = cache.RetainOnly(cached.Select(c => c.Id));
            build = cache.Build(cached);
            LogPrefixCache(logger, input.ModelName, input.Round, build.Computed, build.Reused, dropped, build.Elapsed.TotalSeconds);
            // TrainingLoop finishes each step before it asks for the next batch: one set of stacking buffers serves them all.
            var stackBuffers = new BatchStackBuffers();
            createBatch = members => buffers.Build(examples, members, cache.CreateBatch(Array.ConvertAll(members, i => cached[i]), stackBuffers));
        }
        // Records of equal shape are stacked; each shape group is cut into batches, and batch order is shuffled.
        var batches = IndexedBatches.GroupedShuffled(examples.Select(e => e.Signature).ToList(), batchSize,
            unchecked((int)input.Round), createBatch);
        var totalSteps = (long)input.Epochs * batches.BatchesPerEpoch;
        var cacheTime = clock.Elapsed - cacheStarted;
        TrainingLoopResult trained;
        try
        {
            trained = TrainingLoop.Run(session, batches, new TrainingLoopOptions
            {
                Epochs = input.Epochs,
                Schedule = new RoundWarmup(input.LearningRate, (long)Math.Ceiling(totalSteps * input.WarmupFraction)),
                StopAfterEpoch = e =>
                {
                    LogEpoch(logger, input.ModelName, input.Round, e.Epoch, e.MeanLoss, session.Step - startStep);
                    return false;
                },
            }, ct);
        }
        catch (TrainingDivergedException e)
        {
            throw new OnnxTuneException(
                $"Model '{input.ModelName}': round {input.Round} training loss became {e.Loss} at epoch {e.Epoch}, step {session.Step - startStep + 1} (learning rate {input.LearningRate}).", e);
        }
        var lastEpochLoss = trained.LastEpochLoss;

        ct.ThrowIfCancellationRequested();
        var exportStarted = clock.Elapsed;
        var checkpointDir = Path.Combine(input.WorkingDirectory, CandidateCheckpointFolderName);
        var modelPath = Path.Combine(input.WorkingDirectory, CandidateModelFileName);
        session.SaveCheckpoint(checkpointDir, new Dictionary<string, string>
        {
            ["model"] = input.ModelName,
            ["round"] = input.Round.ToString(CultureInfo.InvariantCulture),
            ["records"] = examples.Count.ToString(CultureInfo.InvariantCulture),
        });
        if (prefix is null) session.ExportInferenceModel(modelPath);
        else session.ExportInferenceModel(modelPath, Path.Combine(input.ArtifactsPath, manifest.Files.InferenceModel));
        if (input.AdapterPath is { } adapterPath) session.ExportAdapter(adapterPath, basePath: null);
        return new FineTuningRoundResult(modelPath, checkpointDir, lastEpochLoss, session.Step - startStep)
        {
            Statistics = new RoundStatistics
            {
                Steps = session.Step - startStep,
                EpochLosses = [.. trained.Epochs.Select(e => e.MeanLoss)],
                PrefixCacheComputed = build?.Computed ?? 0,
                PrefixCacheReused = build?.Reused ?? 0,
                EncodeTime = encodeTime,
                TeacherTime = teacherTime,
                PrefixCacheTime = cacheTime,
                TrainTime = trained.Elapsed,
                ExportTime = clock.Elapsed - exportStarted,
            },
        };
    }

    private List<Example> Encode(FineTuningRoundInput input, out int skipped)
    {
        var examples = new List<Example>(input.NewFeedback.Count + input.ReplaySample.Count);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        skipped = 0;
        var replayIds = input.ReplaySample.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
        foreach (var record in input.NewFeedback.Concat(input.ReplaySample))
        {
            if (!seen.Add(record.Id)) continue;
            // Weight 0 excludes a record; other weights scale its loss when the artifacts take sample weights.
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
            examples.Add(new Example(tensors, record.LabelIndex, signature.ToString(), record.Weight) { Id = record.Id, Replayed = replayIds.Contains(record.Id) });
        }
        return examples;
    }

    /// <summary>The encoder's factor for every trainable parameter outside the head (null when all train at one rate).</summary>
    private static Dictionary<string, double>? EncoderScales(ArtifactManifest manifest, FineTuningRoundInput input)
    {
        if (input.EncoderLearningRateScale == 1.0 || input.HeadParameters.Count == 0) return null;
        var head = input.HeadParameters.Select(ParameterGlob.ToRegex).ToList();
        var names = manifest.TrainableParameters.Select(p => p.Name).ToList();
        var encoder = names.Where(n => !head.Any(r => r.IsMatch(n))).ToList();
        // Without a recognisable head (or without anything else) there are no groups to tell apart.
        if (encoder.Count == 0 || encoder.Count == names.Count) return null;
        return encoder.ToDictionary(n => n, _ => input.EncoderLearningRateScale, StringComparer.Ordinal);
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
    private static void LoadServingWeights(TrainingEngine session, FineTuningRoundInput input)
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

    /// <summary>
    /// Linear warm-up from the serving weights over a round's first updates (the ones that disturb most), never at
    /// zero: update k (0-based) of the warm-up uses rate·(k+1)/(warmup+1).
    /// </summary>
    private sealed class RoundWarmup(double learningRate, long warmupSteps) : ILearningRateSchedule
    {
        public LearningRateScheduleState State { get; } = new("round-warmup", learningRate, warmupSteps);

        public double LearningRateAt(long completedSteps) =>
            completedSteps < warmupSteps ? learningRate * (completedSteps + 1) / (warmupSteps + 1) : learningRate;
    }

    internal sealed record Example(IReadOnlyDictionary<string, TensorData> Tensors, long Label, string Signature, float Weight)
    {
        /// <summary>The feedback record's id (keys the activation cache).</summary>
        public string Id { get; init; } = "";

        /// <summary>The example as the activation cache takes it: one row, so the leading dim of 1 is dropped.</summary>
        public TrainingExample ToCacheExample() => new(Id,
            Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value.ElementType == TensorDataType.Float
                ? SafeTensor.FromFloats(kv.Key, kv.Value.FloatData, [.. kv.Value.Shape.Skip(1)])
                : SafeTensor.FromInt64s(kv.Key, kv.Value.Int64Data, [.. kv.Value.Shape.Skip(1)])).ToList(),
            SafeTensor.FromInt64s("labels", [Label]));

        /// <summary>Whether the record came from the replay sample (distilled toward the serving model).</summary>
        public bool Replayed { get; init; }

        /// <summary>The serving model's scores on the record, or null.</summary>
        public float[]? Teacher { get; set; }

        /// <summary>The record's distillation factor (0: none).</summary>
        public float DistillationFactor { get; set; }
    }

    /// <summary>Stacks records into reused buffers (the session wraps them without copying).</summary>
    private sealed class BatchBuffers(bool weighted, bool distill)
    {
        private static readonly IReadOnlyDictionary<string, TensorData> EmptyTensors = new Dictionary<string, TensorData>();
        private float[] _teacher = [];
        private float[] _factors = [];
        private readonly Dictionary<string, float[]> _floats = new(StringComparer.Ordinal);
        private readonly Dictionary<string, long[]> _longs = new(StringComparer.Ordinal);
        private long[] _labels = [];
        private float[] _weights = [];

        /// <summary>Stacks the members' tensors and labels, or takes <paramref name="prefilled"/> (cached activations and labels), then adds weights and teacher scores.</summary>
        public TrainingBatch Build(List<Example> examples, int[] members, TrainingBatch? prefilled = null)
        {
            var n = members.Length;
            var first = examples[members[0]].Tensors;
            var batch = prefilled ?? new TrainingBatch();
            foreach (var (name, t) in prefilled is null ? first : EmptyTensors)
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
            if (prefilled is null)
            {
                if (_labels.Length < n) _labels = new long[n];
                for (var i = 0; i < n; i++) _labels[i] = examples[members[i]].Label;
                batch.WithLabels(_labels.AsMemory(0, n), n);
            }
            if (weighted)
            {
                if (_weights.Length < n) _weights = new float[n];
                for (var i = 0; i < n; i++) _weights[i] = examples[members[i]].Weight;
                batch.WithSampleWeights(_weights.AsMemory(0, n), n);
            }
            if (distill && examples[members[0]].Teacher is { Length: var classes })
            {
                if (_teacher.Length < n * classes) _teacher = new float[n * classes];
                if (_factors.Length < n) _factors = new float[n];
                for (var i = 0; i < n; i++)
                {
                    var e = examples[members[i]];
                    if (e.Teacher is { } t) t.CopyTo(_teacher, i * classes);
                    else Array.Clear(_teacher, i * classes, classes);
                    _factors[i] = e.DistillationFactor;
                }
                batch.WithDistillation(_teacher.AsMemory(0, n * classes), _factors.AsMemory(0, n), n, classes);
            }
            return batch;
        }

        private static T[] Rent<T>(Dictionary<string, T[]> pool, string name, int length)
        {
            if (!pool.TryGetValue(name, out var buffer) || buffer.Length < length)
                pool[name] = buffer = new T[length];
            return buffer;
        }
    }

    [LoggerMessage(4060, LogLevel.Information,
        "Model '{Model}': round {Round} trains on {Records} records ({Skipped} with weight 0 skipped), {Epochs} epochs, batch {BatchSize}, learning rate {LearningRate}, from {Start}, {Threads} threads.")]
    private static partial void LogRoundTraining(ILogger logger, string model, long round, int records, int skipped, int epochs, int batchSize, double learningRate, string start, int threads);

    [LoggerMessage(4062, LogLevel.Information, "Model '{Model}': round {Round} frozen-prefix cache: {Computed} records run through the frozen layers, {Reused} reused, {Dropped} dropped, {Seconds:F2} s.")]
    private static partial void LogPrefixCache(ILogger logger, string model, long round, int computed, int reused, int dropped, double seconds);

    [LoggerMessage(4063, LogLevel.Debug, "Model '{Model}': rounds train without the frozen-prefix cache: {Reason}.")]
    private static partial void LogNoPrefixCache(ILogger logger, string model, string reason);

    [LoggerMessage(4061, LogLevel.Debug, "Model '{Model}': round {Round} epoch {Epoch} mean loss {Loss:F5} after {Steps} steps.")]
    private static partial void LogEpoch(ILogger logger, string model, long round, int epoch, double loss, long steps);
}
