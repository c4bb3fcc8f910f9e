using OnnxTune.Training.Sessions;
using System.ComponentModel.DataAnnotations;

namespace OnnxTune.Hosting;

/// <summary>Options of one on-device fine-tuned model (configuration section <c>OnDeviceFineTuning[:&lt;name&gt;]</c>).</summary>
public sealed class OnDeviceFineTuningOptions
{
    /// <summary>The default configuration section.</summary>
    public const string DefaultSectionName = "OnDeviceFineTuning";

    private const int DefaultMinNewFeedback = 32;
    private const int DefaultEpochsPerRound = 2;
    private const double DefaultEncoderLearningRateScale = 0.1;
    private const double DefaultWarmupFraction = 0.1;
    private const double DefaultBaseReplayShare = 0.5;
    private const int DefaultBatchSize = 16;
    private const double DefaultLearningRate = 1e-3;
    private const int DefaultTrainingThreads = 1;
    private const int DefaultTrainingNiceness = 10;
    private const double DefaultGoldenTolerance = 0.015;
    private const double DefaultReplayRatio = 2.0;
    private const double DefaultHeldOutShare = 0.1;
    private const int DefaultKeepVersions = 5;
    private const int DefaultMaxTextLength = 2048;

    /// <summary>Gets or sets the artifacts folder (with <c>manifest.json</c>) written by the artifact builder.</summary>
    /// <value>There is no default; the value is required.</value>
    [Required]
    public string ArtifactsPath { get; set; } = "";

    /// <summary>
    /// Gets or sets a model trained offline to serve and fine-tune from, instead of the artifacts' initial weights: the
    /// folder <c>onnxtune train --out</c> writes (<c>model.onnx</c>, <c>checkpoint/</c> and, for text data,
    /// <c>replay.jsonl</c>). At start the model's trainable weights are checked against the checkpoint.
    /// </summary>
    /// <value>The default value is <see langword="null"/>: the artifacts' own inference model and checkpoint are the base.</value>
    public string? TrainedModelPath { get; set; }

    /// <summary>
    /// Gets or sets the base model's own training data (JSON lines in the golden-set format: <c>text</c> or
    /// <c>tensors</c>, and <c>label</c>), mixed into every round's replay sample so that known classes are not forgotten.
    /// </summary>
    /// <value>The default value is <see langword="null"/>: <c>replay.jsonl</c> in <see cref="TrainedModelPath"/> or in <see cref="ArtifactsPath"/>, if present.</value>
    public string? ReplaySetPath { get; set; }

    /// <summary>Gets or sets the share of each round's replay sample drawn (class-balanced) from the replay set; the rest comes from earlier feedback.</summary>
    /// <value>The default value is 0.5 (all of it while there is no earlier feedback, none without a replay set).</value>
    [Range(0.0, 1.0)]
    public double BaseReplayShare { get; set; } = DefaultBaseReplayShare;

    /// <summary>
    /// Gets or sets the learning-rate factor of trainable parameters outside <see cref="HeadParameters"/> (encoder layers):
    /// a new head learns at <see cref="LearningRate"/>, the pretrained layers under it move more slowly and forget less.
    /// </summary>
    /// <value>The default value is 0.1.</value>
    [Range(0.0, 1.0)]
    public double EncoderLearningRateScale { get; set; } = DefaultEncoderLearningRateScale;

    /// <summary>Gets or sets globs (<c>*</c>, <c>?</c>) of the head's parameters, which train at the full learning rate.</summary>
    /// <value>The default value is <c>["head.*"]</c> (the names <c>onnxtune artifacts --head</c> gives); a model with no match trains every parameter at the full rate.</value>
    public IList<string> HeadParameters { get; set; } = ["head.*"];

    /// <summary>
    /// Gets or sets the factor of the distillation term on replayed examples: the serving model's scores on them are the
    /// teacher, so a round keeps what the model already knew (for artifacts with a distillation input, as
    /// <c>onnxtune artifacts --head classification</c> builds; 0 turns it off).
    /// </summary>
    /// <value>The default value is 1.</value>
    [Range(0.0, 100.0)]
    public double DistillationWeight { get; set; } = 1.0;

    /// <summary>Gets or sets the share of a round's steps over which the learning rate rises linearly from 0 (warm-up).</summary>
    /// <value>The default value is 0.1.</value>
    [Range(0.0, 1.0)]
    public double WarmupFraction { get; set; } = DefaultWarmupFraction;

    /// <summary>
    /// Train rounds on the frozen-prefix cache when the artifacts freeze a prefix of the model: the frozen layers run
    /// once per new record (activations kept under <c>ModelStorePath/prefix-cache</c>) and only the trainable part runs
    /// per epoch. Models without a frozen prefix, or with BatchNormalization statistics, train in full either way.
    /// </summary>
    public bool UsePrefixCache { get; set; } = true;

    /// <summary>Gets or sets the folder holding model versions, the feedback database and round scratch space.</summary>
    /// <value>There is no default; the value is required.</value>
    [Required]
    public string ModelStorePath { get; set; } = "";

    /// <summary>Gets or sets the SQLite feedback database file.</summary>
    /// <value>The default value is <see langword="null"/>, meaning <c>feedback.db</c> inside <see cref="ModelStorePath"/>.</value>
    public string? FeedbackDatabasePath { get; set; }

    /// <summary>Gets or sets an optional golden set (JSON lines of labelled inputs) shipped with the app.</summary>
    /// <value>The default value is <see langword="null"/> (no golden-set check).</value>
    public string? GoldenSetPath { get; set; }

    /// <summary>Gets or sets the class labels, in output order; string labels in feedback must be one of them.</summary>
    /// <value>The default value is <see langword="null"/>: the manifest property <c>labels</c> (a JSON array) is used if present.</value>
    public IList<string>? Labels { get; set; }

    /// <summary>Gets or sets how many new training feedback records start a round.</summary>
    /// <value>The default value is 32.</value>
    [Range(1, 10_000_000)]
    public int MinNewFeedback { get; set; } = DefaultMinNewFeedback;

    /// <summary>Gets or sets the longest time between rounds while any new feedback waits.</summary>
    /// <value>The default value is 1 hour.</value>
    [Range(typeof(TimeSpan), "00:00:01", "365.00:00:00")]
    public TimeSpan MaxInterval { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Gets or sets how often the background service checks the round triggers.</summary>
    /// <value>The default value is 10 seconds.</value>
    [Range(typeof(TimeSpan), "00:00:00.010", "1.00:00:00")]
    public TimeSpan CheckInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Gets or sets whether rounds start only when no prediction ran during <see cref="IdleWindow"/>.</summary>
    /// <value>The default value is <see langword="false"/>.</value>
    public bool OnlyWhenIdle { get; set; }

    /// <summary>Gets or sets the quiet time that counts as idle.</summary>
    /// <value>The default value is 30 seconds.</value>
    [Range(typeof(TimeSpan), "00:00:00", "1.00:00:00")]
    public TimeSpan IdleWindow { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Gets or sets the passes over the round's data.</summary>
    /// <value>The default value is 2.</value>
    [Range(1, 1000)]
    public int EpochsPerRound { get; set; } = DefaultEpochsPerRound;

    /// <summary>Gets or sets the training batch size.</summary>
    /// <value>The default value is 16.</value>
    [Range(1, 65536)]
    public int BatchSize { get; set; } = DefaultBatchSize;

    /// <summary>Gets or sets the learning rate (PyTorch AdamW default).</summary>
    /// <value>The default value is 0.001.</value>
    [Range(1e-12, 10.0)]
    public double LearningRate { get; set; } = DefaultLearningRate;

    /// <summary>Gets or sets the intra-op thread budget of training sessions, so that serving latency holds.</summary>
    /// <value>The default value is 1.</value>
    [Range(1, 1024)]
    public int TrainingThreads { get; set; } = DefaultTrainingThreads;

    /// <summary>
    /// Gets or sets the OS priority of a round's training threads, as a Unix nice value (0–19; 0: the app's own
    /// priority). While a round trains, predictions then win the cores whenever both are runnable (Linux: the round
    /// thread's nice value, inherited by ONNX Runtime's pool; Windows: below-normal thread priority).
    /// </summary>
    /// <value>The default value is 10.</value>
    [Range(0, 19)]
    public int TrainingNiceness { get; set; } = DefaultTrainingNiceness;

    /// <summary>
    /// Gets or sets whether a round's training threads run in the OS's idle scheduling class (Linux
    /// <c>SCHED_IDLE</c>, inherited by ONNX Runtime's pool; Windows: lowest thread priority): they then use only cores
    /// the app leaves idle, and a waking request preempts them at once. Null (automatic): idle when the serving
    /// session's threads plus <see cref="TrainingThreads"/> exceed the cores, where a nice value alone left serving
    /// p99 under training at 1.5–1.8× idle (benchmarks/README.md); otherwise <see cref="TrainingNiceness"/> alone.
    /// On a device kept busy by other work, idle-class rounds take longer.
    /// </summary>
    /// <value>The default value is null (automatic).</value>
    public bool? TrainingIdlePriority { get; set; }

    /// <summary>The idle-class decision for this machine (<see cref="TrainingIdlePriority"/>, automatic when null).</summary>
    internal bool UsesIdleTrainingPriority() =>
        TrainingIdlePriority ?? Internal.InferenceSessionFactory.ServingThreads(this) + TrainingThreads > Environment.ProcessorCount;

    /// <summary>Gets or sets the intra-op threads of the serving session (0: the cores training does not use, at least 1).</summary>
    /// <value>The default value is 0.</value>
    [Range(0, 1024)]
    public int InferenceThreads { get; set; }

    /// <summary>Gets or sets the execution provider of the serving session.</summary>
    /// <value>The default value is <see cref="ExecutionProvider.Cpu"/>.</value>
    public ExecutionProvider ExecutionProvider { get; set; } = ExecutionProvider.Cpu;

    /// <summary>Gets or sets the CUDA device id used when <see cref="ExecutionProvider"/> is <see cref="ExecutionProvider.Cuda"/>.</summary>
    /// <value>The default value is 0.</value>
    [Range(0, 64)]
    public int CudaDeviceId { get; set; }

    /// <summary>Gets or sets whether to fall back to CPU (with a warning) when the requested provider is unavailable.</summary>
    /// <value>The default value is <see langword="false"/>: an unavailable provider is an error.</value>
    public bool FallbackToCpu { get; set; }

    /// <summary>
    /// Gets or sets how far (absolute) the golden-set accuracy may fall before a candidate is rejected. The candidate
    /// must reach <c>max(base, serving) − tolerance</c> and <c>best − 2·tolerance</c>, where base is the artifacts' model,
    /// serving the serving version and best the kept version with the highest golden accuracy, all scored on the same
    /// golden set: losses cannot ratchet down one tolerance per round. Without a golden set the replay set
    /// (<see cref="ReplaySetPath"/>) is used; with neither the check passes with a warning in the decision. Learning new
    /// classes costs a little on known ones at first (a new class takes a few of their examples until it has seen more
    /// feedback); 0.01 rejected such clean rounds on a 375-utterance golden set while the final known-domain accuracy
    /// rose, 0.015 let them through and still rejected the random-label round.
    /// </summary>
    /// <value>The default value is 0.015.</value>
    [Range(0.0, 1.0)]
    public double GoldenTolerance { get; set; } = DefaultGoldenTolerance;

    /// <summary>
    /// Gets or sets an optional extra requirement: how much (absolute) the held-out accuracy's point estimate must
    /// improve for promotion. The promotion rule itself is a non-inferiority test (<see cref="GateOptions.HeldOutMargin"/>);
    /// 0 adds nothing to it.
    /// </summary>
    /// <value>The default value is 0.</value>
    [Range(0.0, 1.0)]
    public double MinHeldOutImprovement { get; set; }

    /// <summary>Gets or sets the replay sample size as a multiple of the new feedback count (against forgetting).</summary>
    /// <value>The default value is 2.</value>
    [Range(0.0, 100.0)]
    public double ReplayRatio { get; set; } = DefaultReplayRatio;

    /// <summary>Gets or sets the share of feedback held out for validation (decided per input: the same text or tensors always land on the same side).</summary>
    /// <value>The default value is 0.1.</value>
    [Range(0.0, 0.9)]
    public double HeldOutShare { get; set; } = DefaultHeldOutShare;

    /// <summary>Gets or sets how long feedback is kept (<see langword="null"/>: forever).</summary>
    /// <value>The default value is <see langword="null"/>.</value>
    [Range(typeof(TimeSpan), "01:00:00", "36500.00:00:00")]
    public TimeSpan? FeedbackRetention { get; set; }

    /// <summary>Gets or sets how many promoted versions are kept on disk.</summary>
    /// <value>The default value is 5.</value>
    [Range(1, 1000)]
    public int KeepVersions { get; set; } = DefaultKeepVersions;

    /// <summary>Gets or sets the longest accepted feedback text, in characters.</summary>
    /// <value>The default value is 2048.</value>
    [Range(1, 1_000_000)]
    public int MaxTextLength { get; set; } = DefaultMaxTextLength;

    /// <summary>Gets or sets the largest magnitude accepted in a float feedback tensor (larger values are rejected on write: they overflow the optimizer state).</summary>
    /// <value>The default value is 1e6.</value>
    [Range(1e-6, 1e30)]
    public double MaxFeedbackValue { get; set; } = 1e6;

    /// <summary>Gets or sets the most elements one feedback tensor may hold.</summary>
    /// <value>The default value is 1,048,576.</value>
    [Range(1, 1 << 28)]
    public int MaxFeedbackTensorElements { get; set; } = 1 << 20;

    /// <summary>Gets or sets the largest accepted feedback weight; a larger one is rejected on write (field <c>Weight</c>). Weights never weight the gate's metrics.</summary>
    /// <value>The default value is 10 (weights range over [0, 10]).</value>
    [Range(0.0, 1e6)]
    public float MaxFeedbackWeight { get; set; } = 10f;

    /// <summary>Gets the gate and round-selection options (held-out test, per-class floors, samples, retries, user cap).</summary>
    [Microsoft.Extensions.Options.ValidateObjectMembers]
    public GateOptions Gate { get; set; } = new();

    /// <summary>Gets the drift watch options (live signals after a promotion, automatic rollback).</summary>
    [Microsoft.Extensions.Options.ValidateObjectMembers]
    public DriftWatchOptions DriftWatch { get; set; } = new();

    /// <summary>Gets the per-partition personalization options (one LoRA adapter per tenant or user key).</summary>
    [Microsoft.Extensions.Options.ValidateObjectMembers]
    public PersonalizationOptions Personalization { get; set; } = new();

    /// <summary>Configuration path used in validation messages (set by registration and BindConfiguration).</summary>
    internal string? ConfigurationPath { get; set; }
}
