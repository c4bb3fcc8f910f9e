namespace OnnxTune.Hosting;

/// <summary>What one round trained on and where its time went (<see cref="RoundCompletedEventArgs.Statistics"/>).</summary>
public sealed record RoundStatistics
{
    /// <summary>New feedback records the round selected.</summary>
    public int NewRecords { get; init; }

    /// <summary>Replayed records (earlier confirmed feedback plus the base model's replay set).</summary>
    public int ReplayRecords { get; init; }

    /// <summary>Records quarantined during the round (unusable encodings).</summary>
    public int QuarantinedRecords { get; init; }

    /// <summary>Optimizer steps taken.</summary>
    public long Steps { get; init; }

    /// <summary>Mean training loss of every epoch, in order.</summary>
    public IReadOnlyList<double> EpochLosses { get; init; } = [];

    /// <summary>Records run through the frozen layers by the prefix cache (0 without the cache).</summary>
    public int PrefixCacheComputed { get; init; }

    /// <summary>Records whose frozen-layer activations came from the cache.</summary>
    public int PrefixCacheReused { get; init; }

    /// <summary>Turning records into tensors.</summary>
    public TimeSpan EncodeTime { get; init; }

    /// <summary>Scoring replayed records with the serving model (distillation targets).</summary>
    public TimeSpan TeacherTime { get; init; }

    /// <summary>Running new records through the frozen prefix (and loading the cache).</summary>
    public TimeSpan PrefixCacheTime { get; init; }

    /// <summary>The training loop.</summary>
    public TimeSpan TrainTime { get; init; }

    /// <summary>Writing the candidate's checkpoint and model.</summary>
    public TimeSpan ExportTime { get; init; }

    /// <summary>Evaluating the candidate against the gate.</summary>
    public TimeSpan GateTime { get; init; }

    /// <summary>Storing the version and swapping the serving session (zero when not promoted).</summary>
    public TimeSpan PromotionTime { get; init; }
}
