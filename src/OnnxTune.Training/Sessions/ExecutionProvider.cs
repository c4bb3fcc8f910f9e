namespace OnnxTune.Training.Sessions;

/// <summary>Which ONNX Runtime execution provider runs a session (training graphs and serving sessions alike).</summary>
public enum ExecutionProvider
{
    /// <summary>ONNX Runtime's CPU execution provider.</summary>
    Cpu,
    /// <summary>
    /// The CUDA execution provider (needs the Microsoft.ML.OnnxRuntime.Gpu native package and a GPU). Training
    /// parameters and optimizer state stay in host memory and are copied to the device at each run: correct, not
    /// device-resident.
    /// </summary>
    Cuda,
}
