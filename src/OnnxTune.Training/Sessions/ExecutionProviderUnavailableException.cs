namespace OnnxTune.Training.Sessions;

/// <summary>The requested execution provider is not in the loaded ONNX Runtime or could not be used (the message says how to get it).</summary>
public sealed class ExecutionProviderUnavailableException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public ExecutionProviderUnavailableException(ExecutionProvider provider, string message, Exception? inner = null) : base(message, inner) =>
        Provider = provider;

    /// <summary>Gets the provider that was requested.</summary>
    public ExecutionProvider Provider { get; }
}
