namespace OnnxTune.Hosting;

/// <summary>One stored adapter version of a partition key.</summary>
/// <param name="PartitionKey">The key.</param>
/// <param name="Version">The adapter version (1, 2, …, per key).</param>
/// <param name="BaseModelVersion">The shared model version it was trained on (null: the artifacts' base model); it is applied only while that version serves.</param>
/// <param name="CreatedAt">When it was promoted.</param>
/// <param name="TrainingRecords">The key's records it was trained on.</param>
/// <param name="HeldOutAccuracy">Its accuracy on the key's held-out records at promotion (null: the key had none).</param>
/// <param name="GoldenAccuracy">Its accuracy on the golden sample at promotion (null: no golden reference).</param>
/// <param name="SizeBytes">The adapter file's size.</param>
public sealed record AdapterInfo(string PartitionKey, int Version, int? BaseModelVersion, DateTimeOffset CreatedAt, int TrainingRecords,
    double? HeldOutAccuracy, double? GoldenAccuracy, long SizeBytes)
{
    /// <summary>Gets whether the adapter fits the shared version serving now (otherwise predictions for the key use the shared model until it is retrained).</summary>
    public bool MatchesServingModel { get; init; }
}

/// <summary>How an adapter round for one key ended.</summary>
public sealed class AdapterRoundCompletedEventArgs(string modelName, string partitionKey, RoundOutcome outcome, TimeSpan duration, IReadOnlyList<string> reasons) : EventArgs
{
    /// <summary>Gets the model name.</summary>
    public string ModelName { get; } = modelName;

    /// <summary>Gets the partition key.</summary>
    public string PartitionKey { get; } = partitionKey;

    /// <summary>Gets the outcome.</summary>
    public RoundOutcome Outcome { get; } = outcome;

    /// <summary>Gets how long the round took (training, gate and promotion).</summary>
    public TimeSpan Duration { get; } = duration;

    /// <summary>Gets why the candidate was rejected or the round failed (empty when promoted).</summary>
    public IReadOnlyList<string> Reasons { get; } = reasons;

    /// <summary>Gets the promoted adapter (null unless <see cref="Outcome"/> is <see cref="RoundOutcome.Promoted"/>).</summary>
    public AdapterInfo? Adapter { get; init; }

    /// <summary>Gets the candidate's accuracy on the key's held-out records (null: none, or not evaluated).</summary>
    public double? CandidateHeldOutAccuracy { get; init; }

    /// <summary>Gets the shared model's accuracy on the key's held-out records.</summary>
    public double? SharedHeldOutAccuracy { get; init; }

    /// <summary>Gets the candidate's accuracy on the golden sample.</summary>
    public double? CandidateGoldenAccuracy { get; init; }

    /// <summary>Gets the shared model's accuracy on the golden sample.</summary>
    public double? SharedGoldenAccuracy { get; init; }

    /// <summary>Gets the engine's counts and timings (steps, losses, train and export times).</summary>
    public RoundStatistics Statistics { get; init; } = new();
}

/// <summary>
/// Administration of per-partition adapters of one model (inject it keyed by model name; registered when
/// <see cref="PersonalizationOptions.Enabled"/>). Keys come from the app's authenticated callers; expose none of this
/// to anonymous ones.
/// </summary>
public interface IPersonalizationAdmin
{
    /// <summary>The key's serving adapter, or null when it has none.</summary>
    AdapterInfo? GetAdapter(string partitionKey);

    /// <summary>Every key's serving adapter, ordered by key.</summary>
    IReadOnlyList<AdapterInfo> ListAdapters();

    /// <summary>
    /// Trains, gates and (when it passes) promotes an adapter for the key now, whatever the thresholds, after any round
    /// running; null when the key has no training records.
    /// </summary>
    /// <exception cref="InvalidOperationException">No training engine is registered, or the host has not started.</exception>
    Task<AdapterRoundCompletedEventArgs?> RunRoundAsync(string partitionKey, CancellationToken cancellationToken = default);

    /// <summary>Serves the key's previous adapter version (none left: the shared model); returns what serves now.</summary>
    Task<AdapterInfo?> RollbackAsync(string partitionKey, CancellationToken cancellationToken = default);

    /// <summary>Deletes every adapter version of the key (its feedback stays; delete a user through <see cref="IFineTuningAdmin.DeleteUserAsync"/>); false when it had none.</summary>
    Task<bool> DeleteAsync(string partitionKey, CancellationToken cancellationToken = default);
}
