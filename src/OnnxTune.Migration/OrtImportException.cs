namespace OnnxTune.Migration;

/// <summary>What made an ONNX Runtime training folder unimportable.</summary>
public enum OrtImportErrorKind
{
    /// <summary>A file the import needs is missing.</summary>
    MissingFile,
    /// <summary>The eval model has a node outside the default ONNX domain (a <c>com.microsoft</c> op, say).</summary>
    UnsupportedOperator,
    /// <summary>The checkpoint is neither an ORT flatbuffer checkpoint nor a directory of <c>.pbseq</c> files, or is corrupt.</summary>
    UnrecognizedCheckpoint,
    /// <summary>The checkpoint is nominal: it names the parameters but holds no values.</summary>
    NominalCheckpoint,
    /// <summary>The checkpoint keeps its tensors in an external data file.</summary>
    ExternalData,
    /// <summary>A tensor has an element type OnnxTune does not train (only float and double).</summary>
    UnsupportedTensorType,
    /// <summary>The optimizer model's settings have no exact OnnxTune (PyTorch) equivalent.</summary>
    UnmappableOptimizer,
    /// <summary>Parameters of the eval model and the checkpoint do not match.</summary>
    ParameterMismatch,
    /// <summary>The eval model's loss or structure cannot be turned into OnnxTune artifacts.</summary>
    UnsupportedModel,
}

/// <summary>An ONNX Runtime training folder (eval model, optimizer model, checkpoint) cannot be imported; the message and
/// <see cref="Subject"/> name the op, attribute, tensor or file at fault.</summary>
public sealed class OrtImportException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public OrtImportException(OrtImportErrorKind kind, string subject, string message, Exception? inner = null) : base(message, inner)
    {
        Kind = kind;
        Subject = subject;
    }

    /// <summary>The kind of problem.</summary>
    public OrtImportErrorKind Kind { get; }

    /// <summary>What is at fault: an op type, an attribute, a tensor, a file.</summary>
    public string Subject { get; }
}
