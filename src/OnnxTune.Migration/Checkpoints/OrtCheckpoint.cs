namespace OnnxTune.Migration.Checkpoints;

/// <summary>Which file layout an ONNX Runtime training checkpoint uses.</summary>
public enum OrtCheckpointFormat
{
    /// <summary>One flatbuffer file (identifier <c>ODTC</c>, <c>ort_training_checkpoint.fbs</c>; ORT 1.16 and later).</summary>
    Flatbuffer,
    /// <summary>A directory of length-prefixed TensorProto sequences (<c>paramtrain_tensors.pbseq</c>...; ORT 1.14–1.15).</summary>
    ProtobufSequence,
}

/// <summary>A float or double tensor of an ONNX Runtime checkpoint, as little-endian bytes.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="Dims">Shape.</param>
/// <param name="IsDouble">Element type double (else float).</param>
/// <param name="Data">Little-endian element bytes.</param>
public sealed record OrtTensor(string Name, long[] Dims, bool IsDouble, byte[] Data)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Dims.Aggregate(1L, (a, b) => a * b);
}

/// <summary>The optimizer state of one parameter group.</summary>
/// <param name="Name">Group name (ORT writes <c>group0</c>).</param>
/// <param name="Step">Updates applied so far.</param>
/// <param name="InitialLearningRate">The group's learning rate.</param>
/// <param name="States">Per parameter, its state tensors by ORT's names (<c>momentum0</c>, <c>momentum1</c>).</param>
public sealed record OrtOptimizerGroup(string Name, long Step, float InitialLearningRate,
    IReadOnlyDictionary<string, IReadOnlyDictionary<string, OrtTensor>> States);

/// <summary>An ONNX Runtime training checkpoint in memory: parameters, optimizer groups, user properties.</summary>
public sealed record OrtCheckpoint
{
    /// <summary>The format it was read from.</summary>
    public OrtCheckpointFormat Format { get; init; }

    /// <summary>Flatbuffer checkpoint format version (0 for .pbseq directories).</summary>
    public int Version { get; init; }

    /// <summary>Parameters that require gradients.</summary>
    public IReadOnlyList<OrtTensor> Trainable { get; init; } = [];

    /// <summary>Frozen parameters.</summary>
    public IReadOnlyList<OrtTensor> Frozen { get; init; } = [];

    /// <summary>Optimizer groups (empty for a checkpoint written before training).</summary>
    public IReadOnlyList<OrtOptimizerGroup> OptimizerGroups { get; init; } = [];

    /// <summary>User properties: <see cref="long"/>, <see cref="float"/> or <see cref="string"/> values.</summary>
    public IReadOnlyDictionary<string, object> Properties { get; init; } = new Dictionary<string, object>();
}
