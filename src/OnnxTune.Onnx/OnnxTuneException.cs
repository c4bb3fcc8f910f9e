namespace OnnxTune;

/// <summary>Base type of every error OnnxTune raises on purpose; the message names the op, tensor or field at fault.</summary>
public class OnnxTuneException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public OnnxTuneException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and the error that caused it.</summary>
    public OnnxTuneException(string message, Exception? inner) : base(message, inner) { }
}

/// <summary>The bytes are not a readable ONNX model (corrupt, truncated, missing graph or external data).</summary>
public sealed class OnnxModelFormatException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public OnnxModelFormatException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>The model uses an opset OnnxTune cannot train (older than 13, or an op from a non-default domain).</summary>
public sealed class UnsupportedModelException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public UnsupportedModelException(string message) : base(message) { }
}
