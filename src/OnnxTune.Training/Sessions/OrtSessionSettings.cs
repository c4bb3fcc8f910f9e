using Microsoft.ML.OnnxRuntime;

namespace OnnxTune.Training.Sessions;

/// <summary>What <see cref="OrtSessionFactory"/> puts into ONNX Runtime session options.</summary>
public sealed record OrtSessionSettings
{
    /// <summary>The execution provider.</summary>
    public ExecutionProvider Provider { get; init; } = ExecutionProvider.Cpu;

    /// <summary>CUDA device id (with <see cref="ExecutionProvider.Cuda"/>).</summary>
    public int CudaDeviceId { get; init; }

    /// <summary>Fall back to the CPU when the provider cannot be used, instead of failing.</summary>
    public bool FallbackToCpu { get; init; }

    /// <summary>Threads inside one operator (0: ONNX Runtime chooses).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>Threads across independent operators (0: ONNX Runtime chooses; above 1 the parallel executor is used).</summary>
    public int InterOpThreads { get; init; }

    /// <summary>How pool threads wait for work (null: ONNX Runtime's default).</summary>
    public ThreadSpinning? Spinning { get; init; }

    /// <summary>ONNX Runtime's memory pattern planning (null: its default, on).</summary>
    public bool? MemoryPattern { get; init; }

    /// <summary>Last say over the options (graph optimisation level, profiling, custom ops...).</summary>
    public Action<SessionOptions>? Configure { get; init; }
}
