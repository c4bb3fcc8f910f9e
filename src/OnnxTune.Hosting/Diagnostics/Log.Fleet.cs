using Microsoft.Extensions.Logging;

namespace OnnxTune.Hosting.Diagnostics;

/// <summary>Log messages of several instances sharing one store (event ids 4090-4099).</summary>
internal static partial class Log
{
    [LoggerMessage(4090, LogLevel.Information, "Model '{Model}': this instance took the trainer lease; it runs the rounds now.")]
    public static partial void TrainerLeaseAcquired(ILogger logger, string model);

    [LoggerMessage(4091, LogLevel.Warning, "Model '{Model}': this instance lost the trainer lease; it only serves now.")]
    public static partial void TrainerLeaseLost(ILogger logger, string model);
}
