// Shared definition of the benchmark workloads W1–W3 (issue 5). Plain C#, no dependencies: benchmark projects
// include this file by link (<Compile Include="../Workloads/WorkloadSpec.cs" />). benchmarks/pytorch/bench.py
// mirrors every number here; keep the two in step.
namespace OnnxTune.Benchmarks.Workloads;

/// <summary>Which architecture a workload trains.</summary>
internal enum WorkloadKind
{
    /// <summary>Linear(384→256), ReLU, Linear(256→150) on [batch, 384] features.</summary>
    Head,

    /// <summary><c>Layers</c> post-LayerNorm BERT layers, mean-pool over the sequence, Linear(384→150).</summary>
    Encoder,
}

/// <summary>
/// One training workload: shapes, step counts and analytic FLOPs. One step = zero grads + forward + cross-entropy
/// (mean) + backward + AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01), float32.
/// </summary>
internal sealed record WorkloadSpec(string Name, WorkloadKind Kind, int Layers, int Batch, int SequenceLength, int TimedSteps)
{
    /// <summary>Hidden size (MiniLM-L6).</summary>
    public const int Hidden = 384;

    /// <summary>Attention heads (12 heads of 32).</summary>
    public const int Heads = 12;

    /// <summary>Per-head size.</summary>
    public const int HeadSize = Hidden / Heads;

    /// <summary>Feed-forward (intermediate) size.</summary>
    public const int Intermediate = 1536;

    /// <summary>Hidden size of the W1 head.</summary>
    public const int HeadHidden = 256;

    /// <summary>Output classes (CLINC150).</summary>
    public const int Classes = 150;

    /// <summary>LayerNorm epsilon (BERT).</summary>
    public const double LayerNormEps = 1e-12;

    /// <summary>Seed for weights, inputs and labels.</summary>
    public const int Seed = 1234;

    /// <summary>Untimed steps before measuring.</summary>
    public const int WarmupSteps = 20;

    /// <summary>Intra-op threads.</summary>
    public const int IntraOpThreads = 2;

    /// <summary>Inter-op threads.</summary>
    public const int InterOpThreads = 1;

    /// <summary>AdamW learning rate.</summary>
    public const double LearningRate = 1e-3;

    /// <summary>AdamW beta1.</summary>
    public const double Beta1 = 0.9;

    /// <summary>AdamW beta2.</summary>
    public const double Beta2 = 0.999;

    /// <summary>AdamW epsilon.</summary>
    public const double Eps = 1e-8;

    /// <summary>AdamW decoupled weight decay.</summary>
    public const double WeightDecay = 0.01;

    /// <summary>W1: classification head on pooled features; batch 32.</summary>
    public static readonly WorkloadSpec W1 = new("W1", WorkloadKind.Head, 0, 32, 1, 100);

    /// <summary>W2: one MiniLM-sized post-LN BERT layer + mean-pool + classifier; batch 32, sequence 64.</summary>
    public static readonly WorkloadSpec W2 = new("W2", WorkloadKind.Encoder, 1, 32, 64, 100);

    /// <summary>W3: six such layers (a MiniLM-L6 encoder without embeddings); batch 16, sequence 32.</summary>
    public static readonly WorkloadSpec W3 = new("W3", WorkloadKind.Encoder, 6, 16, 32, 30);

    /// <summary>All workloads in run order.</summary>
    public static IReadOnlyList<WorkloadSpec> All { get; } = [W1, W2, W3];

    /// <summary>Looks a workload up by name (case-insensitive); null when unknown.</summary>
    public static WorkloadSpec? Find(string name) =>
        All.FirstOrDefault(w => string.Equals(w.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Forward matmul FLOPs of one step (2·m·k·n per [m,k]×[k,n] product; element-wise ops, softmax, LayerNorm,
    /// GELU, pooling and the loss are not counted).
    /// Head: 2·B·(384·256 + 256·150).
    /// Encoder, per layer with T = B·S tokens: Q, K, V and attention-output projections 4·2·T·H², the two
    /// feed-forward matmuls 2·2·T·H·I, scores Q·Kᵀ and probabilities·V 2·2·B·S²·H; plus the classifier 2·B·H·C.
    /// </summary>
    public long ForwardFlops => Kind switch
    {
        WorkloadKind.Head => 2L * Batch * ((long)Hidden * HeadHidden + (long)HeadHidden * Classes),
        _ => Layers * EncoderLayerForwardFlops(Batch, SequenceLength) + 2L * Batch * Hidden * Classes,
    };

    /// <summary>
    /// Analytic FLOPs of one training step: forward + backward ≈ 3 × forward matmul FLOPs (the backward pass
    /// computes two products per forward product: the input gradient and the weight gradient). The optimizer
    /// update (O(parameters)) is not counted.
    /// </summary>
    public long FlopsPerStep => 3L * ForwardFlops;

    /// <summary>Trainable parameter count (weights and biases, LayerNorm scales and shifts).</summary>
    public long ParameterCount => Kind switch
    {
        WorkloadKind.Head => (long)Hidden * HeadHidden + HeadHidden + (long)HeadHidden * Classes + Classes,
        _ => Layers * EncoderLayerParameters + (long)Hidden * Classes + Classes,
    };

    private const long EncoderLayerParameters =
        4L * (Hidden * Hidden + Hidden)                      // query, key, value, attention output
        + (long)Hidden * Intermediate + Intermediate        // intermediate
        + (long)Intermediate * Hidden + Hidden              // output
        + 2L * 2 * Hidden;                                  // two LayerNorms

    private static long EncoderLayerForwardFlops(int batch, int sequence)
    {
        long tokens = (long)batch * sequence;
        long projections = 4L * 2 * tokens * Hidden * Hidden;
        long feedForward = 2L * 2 * tokens * Hidden * Intermediate;
        long attention = 2L * 2 * batch * (long)sequence * sequence * Hidden;
        return projections + feedForward + attention;
    }
}
