using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Hosting.Diagnostics;
using OnnxTune.Training.Sessions;

namespace OnnxTune.Hosting.Internal;

/// <summary>Creates serving sessions with the configured execution provider and warms them up before use.</summary>
internal sealed class InferenceSessionFactory(string modelName, OnDeviceFineTuningOptions options, ILogger logger)
{
    public InferenceSession Create(string modelPath)
    {
        if (!File.Exists(modelPath))
            throw new ModelNotServingException($"Model '{modelName}': the model file '{modelPath}' does not exist.");
        using var so = CreateSessionOptions(options.ExecutionProvider, options.CudaDeviceId, ServingThreads(options), options.FallbackToCpu, modelName, logger);
        InferenceSession session;
        try
        {
            session = new InferenceSession(modelPath, so);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelNotServingException($"Model '{modelName}': ONNX Runtime cannot load '{modelPath}': {e.Message}", e);
        }
        try
        {
            WarmUp(session);
        }
        catch (OnnxRuntimeException e)
        {
            // Zeros with symbolic dims set to 1 are not valid input for every model; the session is still usable.
            Log.WarmUpFailed(logger, modelName, modelPath, e.Message);
        }
        return session;
    }

    /// <summary>
    /// Serving threads: the configured number, or by default the cores training does not use, so a background round
    /// does not compete with predictions for the same cores (measured: p99 under training 3.5× idle with ONNX
    /// Runtime's default of all cores, 1.15× with the cores split).
    /// </summary>
    internal static int ServingThreads(OnDeviceFineTuningOptions options) =>
        options.InferenceThreads > 0 ? options.InferenceThreads : Math.Max(1, Environment.ProcessorCount - options.TrainingThreads);

    internal static SessionOptions CreateSessionOptions(ExecutionProvider provider, int cudaDeviceId, int intraOpThreads, bool fallbackToCpu, string modelName, ILogger logger)
    {
        try
        {
            var so = OrtSessionFactory.CreateOptions(new OrtSessionSettings
            {
                Provider = provider,
                CudaDeviceId = cudaDeviceId,
                FallbackToCpu = fallbackToCpu,
                IntraOpThreads = intraOpThreads,
            }, out var fellBack);
            if (fellBack is not null) Log.ExecutionProviderFallback(logger, modelName, provider, fellBack);
            return so;
        }
        catch (ExecutionProviderUnavailableException e)
        {
            throw new ExecutionProviderUnavailableException(provider, $"Model '{modelName}': {e.Message} Or set FallbackToCpu.", e);
        }
    }

    /// <summary>One run on zeros (symbolic dims set to 1) so the first request does not pay for lazy initialisation.</summary>
    private static void WarmUp(InferenceSession session)
    {
        var values = new List<OrtValue>();
        try
        {
            var names = new List<string>();
            foreach (var (name, meta) in session.InputMetadata)
            {
                if (!meta.IsTensor) return;
                var shape = meta.Dimensions.Select(d => d < 0 ? 1L : d).ToArray();
                var n = (int)shape.Aggregate(1L, (a, b) => a * b);
                OrtValue v = meta.ElementDataType switch
                {
                    Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(new float[n], shape),
                    Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(new long[n], shape),
                    Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(new int[n], shape),
                    Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Double => OrtValue.CreateTensorValueFromMemory(new double[n], shape),
                    Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Bool => OrtValue.CreateTensorValueFromMemory(new bool[n], shape),
                    _ => null!,
                };
                if (v is null) return;
                values.Add(v);
                names.Add(name);
            }
            using var ro = new RunOptions();
            using var _ = session.Run(ro, names, values, session.OutputNames);
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }
}
