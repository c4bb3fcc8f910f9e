using Microsoft.Extensions.Logging;

namespace OnnxTune.Hosting.Diagnostics;

/// <summary>Log messages of personalization (event ids 4100-4109; the adapter rounds log 4100-4103).</summary>
internal static partial class Log
{
    [LoggerMessage(4104, LogLevel.Warning, "Model '{Model}': adapter state '{File}' is damaged and ignored (the key is served by the shared model and retrained).")]
    public static partial void AdapterStateDamaged(ILogger logger, string model, string file, Exception exception);
}
