using Microsoft.ML.OnnxRuntime;

namespace OnnxTune.Training.Sessions;

/// <summary>
/// The one place ONNX Runtime session options are made: threads, spinning, execution mode and the execution
/// provider, for the training engine's graphs and for hosting's serving sessions.
/// </summary>
public static class OrtSessionFactory
{
    private const string CudaProviderName = "CUDAExecutionProvider";

    /// <summary>Creates session options; <paramref name="fellBackToCpu"/> tells whether the provider could not be used and the CPU was chosen.</summary>
    /// <exception cref="ExecutionProviderUnavailableException">The provider is not available and <see cref="OrtSessionSettings.FallbackToCpu"/> is off.</exception>
    public static SessionOptions CreateOptions(OrtSessionSettings settings, out string? fellBackToCpu)
    {
        ArgumentNullException.ThrowIfNull(settings);
        fellBackToCpu = null;
        var so = Base(settings);
        try
        {
            if (settings.Provider == ExecutionProvider.Cuda)
            {
                try
                {
                    var available = OrtEnv.Instance().GetAvailableProviders();
                    if (!available.Contains(CudaProviderName))
                        throw new ExecutionProviderUnavailableException(ExecutionProvider.Cuda,
                            $"The CUDA execution provider is not in the loaded ONNX Runtime (available: {string.Join(", ", available)}). Reference Microsoft.ML.OnnxRuntime.Gpu instead of Microsoft.ML.OnnxRuntime, or use ExecutionProvider.Cpu.");
                    so.AppendExecutionProvider_CUDA(settings.CudaDeviceId);
                }
                catch (Exception e) when (settings.FallbackToCpu && e is ExecutionProviderUnavailableException or OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
                {
                    fellBackToCpu = e.Message;
                    so.Dispose();
                    so = Base(settings);
                }
                catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
                {
                    throw new ExecutionProviderUnavailableException(ExecutionProvider.Cuda,
                        $"CUDA device {settings.CudaDeviceId} could not be used: {e.Message} Reference Microsoft.ML.OnnxRuntime.Gpu and install CUDA, or fall back to the CPU.", e);
                }
            }
            settings.Configure?.Invoke(so);
            return so;
        }
        catch
        {
            so.Dispose();
            throw;
        }
    }

    /// <summary>The parallel executor only pays off with more than one inter-op thread; with one it adds scheduling overhead.</summary>
    internal static ExecutionMode ExecutionModeFor(int interOpThreads) =>
        interOpThreads > 1 ? ExecutionMode.ORT_PARALLEL : ExecutionMode.ORT_SEQUENTIAL;

    internal static IReadOnlyList<KeyValuePair<string, string>> SessionConfigEntries(ThreadSpinning? spinning) => spinning switch
    {
        null or ThreadSpinning.Always => [],
        ThreadSpinning.DuringRuns => [new("session.force_spinning_stop", "1")],
        _ => [new("session.intra_op.allow_spinning", "0"), new("session.inter_op.allow_spinning", "0")],
    };

    private static SessionOptions Base(OrtSessionSettings settings)
    {
        var so = new SessionOptions();
        if (settings.IntraOpThreads > 0) so.IntraOpNumThreads = settings.IntraOpThreads;
        so.ExecutionMode = ExecutionModeFor(settings.InterOpThreads);
        if (settings.InterOpThreads > 0) so.InterOpNumThreads = settings.InterOpThreads;
        foreach (var (key, value) in SessionConfigEntries(settings.Spinning)) so.AddSessionConfigEntry(key, value);
        if (settings.MemoryPattern is { } pattern) so.EnableMemoryPattern = pattern;
        return so;
    }
}
