using System.ComponentModel.DataAnnotations;

namespace OnnxTune.Hosting;

/// <summary>
/// Per-partition personalization (configuration section <c>OnDeviceFineTuning[:&lt;name&gt;]:Personalization</c>): besides
/// the shared model, which normal rounds keep improving on all feedback, every partition key (tenant or user id,
/// <see cref="Feedback.PartitionKey"/>) with enough feedback gets its own LoRA adapter on the serving model, trained from
/// that key's records, gated on the key's held-out records and the golden set, versioned, and served through ONNX
/// Runtime's adapter API for predictions that name the key.
/// </summary>
public sealed class PersonalizationOptions
{
    /// <summary>Gets or sets whether partitions get adapters.</summary>
    /// <value>The default value is <see langword="false"/>.</value>
    public bool Enabled { get; set; }

    /// <summary>
    /// Gets or sets globs of the MatMul/Gemm weights that get adapters.
    /// </summary>
    /// <value>The default value is <see langword="null"/>: every 2-D trainable parameter of the artifacts that is a MatMul/Gemm weight (where the shared rounds train).</value>
    public IList<string>? AdapterTargets { get; set; }

    /// <summary>Gets or sets the adapter rank r.</summary>
    /// <value>The default value is 8.</value>
    [Range(1, 1024)]
    public int Rank { get; set; } = 8;

    /// <summary>Gets or sets the adapter alpha (the branch is scaled by alpha / r).</summary>
    /// <value>The default value is <see langword="null"/>: 2·r, as <c>onnxtune artifacts --lora</c>.</value>
    [Range(1e-6, 1e6)]
    public double? Alpha { get; set; }

    /// <summary>Gets or sets how many training records a key needs, and how many new ones since its last adapter round, before a round runs for it.</summary>
    /// <value>The default value is 8.</value>
    [Range(1, 1_000_000)]
    public int MinNewFeedback { get; set; } = 8;

    /// <summary>Gets or sets the passes over a key's records per adapter round.</summary>
    /// <value>The default value is 20 (a key has few records, and a LoRA branch starts at zero).</value>
    [Range(1, 1000)]
    public int EpochsPerRound { get; set; } = 20;

    /// <summary>Gets or sets the AdamW learning rate of adapter rounds.</summary>
    /// <value>The default value is 0.005.</value>
    [Range(1e-8, 1.0)]
    public double LearningRate { get; set; } = 5e-3;

    /// <summary>Gets or sets the batch size of adapter rounds.</summary>
    /// <value>The default value is 16.</value>
    [Range(1, 4096)]
    public int BatchSize { get; set; } = 16;

    /// <summary>Gets or sets the most records (the newest) of a key an adapter round trains on.</summary>
    /// <value>The default value is 2000.</value>
    [Range(1, 1_000_000)]
    public int MaxRecordsPerRound { get; set; } = 2000;

    /// <summary>
    /// Gets or sets the replay-set records (class-balanced, of classes the key does not relabel) mixed in per key record,
    /// distilled toward the shared model (<see cref="OnDeviceFineTuningOptions.DistillationWeight"/>), so that an adapter
    /// keeps what the shared model knows about everything its key does not correct.
    /// </summary>
    /// <value>The default value is 10.</value>
    [Range(0.0, 100.0)]
    public double ReplayRatio { get; set; } = 10.0;

    /// <summary>Gets or sets how much lower (absolute accuracy, and at least one record) than the shared model an adapter may score on the golden reference.</summary>
    /// <value>The default value is 0.05: a key's own conventions may differ from the golden set's on a few classes.</value>
    [Range(0.0, 1.0)]
    public double MaxGoldenDrop { get; set; } = 0.05;

    /// <summary>Gets or sets how many golden records (class-stratified) an adapter round scores.</summary>
    /// <value>The default value is 300.</value>
    [Range(1, 1_000_000)]
    public int GoldenSample { get; set; } = 300;

    /// <summary>Gets or sets the memory budget of loaded adapters (least recently used ones are unloaded beyond it).</summary>
    /// <value>The default value is 256 MiB.</value>
    [Range(0L, long.MaxValue)]
    public long MaxLoadedAdapterBytes { get; set; } = 256L << 20;

    /// <summary>Gets or sets how many adapter versions per key are kept on disk (for rollback).</summary>
    /// <value>The default value is 3.</value>
    [Range(1, 1000)]
    public int KeepVersions { get; set; } = 3;

    /// <summary>Gets or sets how many keys get an adapter round per check of the background loop (after the shared round).</summary>
    /// <value>The default value is 4.</value>
    [Range(1, 100_000)]
    public int MaxRoundsPerCheck { get; set; } = 4;
}
