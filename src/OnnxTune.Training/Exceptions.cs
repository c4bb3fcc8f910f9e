namespace OnnxTune.Training;

/// <summary>A batch does not fit the training graph: a missing or unknown input, wrong type, rank or dim, a NaN/Inf
/// value, or a label outside the class range. <see cref="InputName"/> names the tensor.</summary>
public sealed class BatchValidationException : OnnxTuneException
{
    /// <summary>Creates the exception for the tensor <paramref name="inputName"/>.</summary>
    public BatchValidationException(string inputName, string message) : base(message) => InputName = inputName;

    /// <summary>The input (or label) at fault.</summary>
    public string InputName { get; }
}

/// <summary>A checkpoint does not fit the artifacts: the message names the first mismatching tensor, shape or optimizer.</summary>
public sealed class CheckpointMismatchException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public CheckpointMismatchException(string message) : base(message) { }
}

/// <summary>A checkpoint folder is missing files or holds unreadable or inconsistent ones.</summary>
public sealed class CheckpointFormatException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public CheckpointFormatException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>The artifacts folder is inconsistent: a graph lacks an input or output the manifest promises.</summary>
public sealed class InvalidArtifactsException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public InvalidArtifactsException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>Session options that cannot work together with these artifacts or this device (the message says which).</summary>
public sealed class TrainingOptionsException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public TrainingOptionsException(string message) : base(message) { }
}
