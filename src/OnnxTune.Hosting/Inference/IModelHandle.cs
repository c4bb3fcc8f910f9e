using Microsoft.ML.OnnxRuntime;

namespace OnnxTune.Hosting;

/// <summary>
/// Predicts with the serving version of one model. Swaps to newly promoted versions happen underneath: calls in
/// flight finish on the session they started with, and no call waits on a lock because of a swap.
/// </summary>
public interface IModelHandle
{
    /// <summary>Gets the model name (empty for the default model).</summary>
    string ModelName { get; }

    /// <summary>Gets the serving version (null while serving the artifacts' base model, or before loading).</summary>
    int? ServingVersion { get; }

    /// <summary>Runs the model on named tensors and returns copies of all float and int64 outputs.</summary>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    ModelOutput Predict(IReadOnlyDictionary<string, TensorData> inputs);

    /// <summary>
    /// Runs the model for a partition key (tenant or user): with the key's adapter when personalization is on and the
    /// key has one trained on the serving version, otherwise the shared model (<see cref="ModelOutput.AdapterVersion"/> null).
    /// Take the key from the authenticated caller.
    /// </summary>
    /// <exception cref="ModelNotServingException">No model could be loaded.</exception>
    ModelOutput Predict(IReadOnlyDictionary<string, TensorData> inputs, string? partitionKey);

    /// <summary>
    /// Runs <paramref name="run"/> with the serving session leased for the duration of the call. The session
    /// must not be used after <paramref name="run"/> returns; copy out what you need.
    /// </summary>
    TResult Run<TResult>(Func<InferenceSession, TResult> run);
}

/// <summary>A prediction result.</summary>
/// <param name="Version">The version that produced it (null: base model).</param>
/// <param name="Outputs">Output tensors by name.</param>
public sealed record ModelOutput(int? Version, IReadOnlyDictionary<string, TensorData> Outputs)
{
    /// <summary>Gets the partition key's adapter version that produced it (null: the shared model).</summary>
    public int? AdapterVersion { get; init; }
}

/// <summary>No serving session is available (the model failed to load, or the host is stopping).</summary>
public sealed class ModelNotServingException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public ModelNotServingException(string message, Exception? inner = null) : base(message, inner) { }
}

