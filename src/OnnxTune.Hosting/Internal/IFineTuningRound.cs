using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Trains one round. The training engine implements this (registered keyed by model name); it must write only
/// inside <see cref="FineTuningRoundInput.WorkingDirectory"/>, which the caller deletes afterwards, so a
/// cancelled or failed round leaves nothing behind.
/// </summary>
internal interface IFineTuningRound
{
    Task<FineTuningRoundResult> RunAsync(FineTuningRoundInput input, CancellationToken cancellationToken);
}

/// <summary>Inputs of one round.</summary>
/// <param name="ModelName">The model name.</param>
/// <param name="Round">The round number (1-based, persisted across restarts).</param>
/// <param name="ArtifactsPath">The artifacts folder (training, eval and optimizer graphs).</param>
/// <param name="Manifest">The artifacts manifest.</param>
/// <param name="ServingModelPath">The serving inference model.</param>
/// <param name="ServingCheckpointPath">The serving model's checkpoint folder (parameters and optimizer state) to start from.</param>
/// <param name="NewFeedback">Training records not trained on before.</param>
/// <param name="ReplaySample">A sample of earlier training records, against forgetting.</param>
/// <param name="Epochs">Passes over the round's data.</param>
/// <param name="BatchSize">Batch size.</param>
/// <param name="LearningRate">Learning rate.</param>
/// <param name="ThreadBudget">Intra-op threads for training sessions.</param>
/// <param name="WorkingDirectory">An empty folder the round owns.</param>
internal sealed record FineTuningRoundInput(
    string ModelName,
    long Round,
    string ArtifactsPath,
    ArtifactManifest Manifest,
    string ServingModelPath,
    string ServingCheckpointPath,
    IReadOnlyList<FeedbackRecord> NewFeedback,
    IReadOnlyList<FeedbackRecord> ReplaySample,
    int Epochs,
    int BatchSize,
    double LearningRate,
    int ThreadBudget,
    string WorkingDirectory)
{
    /// <summary>Learning-rate factor of trainable parameters outside <see cref="HeadParameters"/>.</summary>
    public double EncoderLearningRateScale { get; init; } = 1.0;

    /// <summary>Globs of the head's parameters (full learning rate).</summary>
    public IReadOnlyList<string> HeadParameters { get; init; } = [];

    /// <summary>Share of the round's steps with a linear learning-rate warm-up.</summary>
    public double WarmupFraction { get; init; }

    /// <summary>Folder for frozen-prefix artifacts and cached activations kept across rounds (null: no cache).</summary>
    public string? PrefixCacheDirectory { get; init; }

    /// <summary>Where to write the trained tensors as an ONNX Runtime adapter file too (adapter rounds), or null.</summary>
    public string? AdapterPath { get; init; }

    /// <summary>Factor of the distillation term on replayed records (teacher: the serving model); 0 turns it off.</summary>
    public double DistillationWeight { get; init; }

    /// <summary>Nice value of the round's training thread (and the ONNX Runtime pool it opens); 0: the app's priority.</summary>
    public int TrainingNiceness { get; init; }

    /// <summary>Runs the round's training thread (and its ONNX Runtime pool) in the OS's idle scheduling class.</summary>
    public bool TrainingIdlePriority { get; init; }

    /// <summary>
    /// Called by the engine for a record it cannot use (its encoding throws, or its tensors do not fit); the
    /// engine then goes on without it. The caller quarantines the record. Null: the engine throws as before.
    /// </summary>
    public Action<FeedbackRecord, Exception>? RecordFailed { get; init; }
}

/// <summary>Outputs of one round, all inside the working directory.</summary>
/// <param name="CandidateModelPath">The candidate inference model (trained weights).</param>
/// <param name="CandidateCheckpointPath">The candidate's checkpoint folder.</param>
/// <param name="TrainLoss">Mean training loss of the last epoch.</param>
/// <param name="Steps">Optimizer steps taken.</param>
internal sealed record FineTuningRoundResult(string CandidateModelPath, string CandidateCheckpointPath, double TrainLoss, long Steps)
{
    /// <summary>Counts and timings of the engine's part of the round (the gate and promotion are added by the caller).</summary>
    public RoundStatistics Statistics { get; init; } = new();
}

/// <summary>Turns a feedback record into model input tensors (text models plug in a tokenizer-backed encoder).</summary>
internal interface IFeedbackEncoder
{
    IReadOnlyDictionary<string, TensorData> Encode(FeedbackRecord record);
}

/// <summary>The default encoder: tensor records pass through; text records need a text encoder.</summary>
internal sealed class TensorFeedbackEncoder(string modelName) : IFeedbackEncoder
{
    public IReadOnlyDictionary<string, TensorData> Encode(FeedbackRecord record) =>
        record.Tensors ?? throw new OnnxTuneException(
            $"Model '{modelName}': feedback record {record.Id} is text, but no text encoder is registered for the model (OnnxTune.Text).");
}
