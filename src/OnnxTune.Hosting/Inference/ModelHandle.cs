using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxTune.Hosting.Internal;

/// <summary>The injectable handle: leases the serving session per call and records activity for idle detection.</summary>
internal sealed class ModelHandle(string modelName, SwappableInferenceSession sessions, Action ensureLoaded, TimeProvider timeProvider) : IModelHandle
{
    private long _lastUse = long.MinValue;

    /// <summary>Sees every prediction served through <see cref="Predict(IReadOnlyDictionary{string, TensorData})"/> (shared-model predictions) (the drift watch).</summary>
    internal IPredictionObserver? Observer { get; set; }

    public string ModelName => modelName;

    public int? ServingVersion => sessions.Current?.Version?.Version;

    /// <summary>Timestamp (<see cref="TimeProvider.GetTimestamp"/>) of the last call, or null.</summary>
    internal long? LastUseTimestamp => Volatile.Read(ref _lastUse) is var t && t != long.MinValue ? t : null;

    /// <summary>Serves keyed predictions with the keys' adapters (set when personalization is on).</summary>
    internal Personalization.AdapterServing? Adapters { get; set; }

    public ModelOutput Predict(IReadOnlyDictionary<string, TensorData> inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        using var lease = Lease();
        var output = Run(lease.Session, inputs, null, lease.Entry.Version?.Version);
        Observer?.Observed(lease.Entry.Version?.Version, output.Outputs);
        return output;
    }

    public ModelOutput Predict(IReadOnlyDictionary<string, TensorData> inputs, string? partitionKey)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (partitionKey is null || Adapters is not { } adapters) return Predict(inputs);
        using var lease = Lease();
        // The shared lease pins the version the adapter must have been trained on for the duration of the call.
        if (!adapters.TryLease(partitionKey, lease.Entry.ModelPath, out var adapter))
            return Predict(inputs);
        using (adapter)
            return Run(adapter.Session, inputs, adapter, lease.Entry.Version?.Version) with { AdapterVersion = adapter.AdapterVersion };
    }

    private ModelOutput Run(InferenceSession session, IReadOnlyDictionary<string, TensorData> inputs, Personalization.AdapterLease? adapter, int? version)
    {
        var names = new List<string>(inputs.Count);
        var values = new List<OrtValue>(inputs.Count);
        try
        {
            foreach (var (name, t) in inputs)
            {
                if (!session.InputMetadata.ContainsKey(name))
                    throw new OnnxTuneException($"Model '{modelName}' has no input '{name}' (inputs: {string.Join(", ", session.InputNames)}).");
                var shape = t.Shape.ToArray();
                values.Add(t.FloatData is { } f ? OrtValue.CreateTensorValueFromMemory(f, shape) : OrtValue.CreateTensorValueFromMemory(t.Int64Data!, shape));
                names.Add(name);
            }
            using var ro = new RunOptions();
            if (adapter is { } a) ro.AddActiveLoraAdapter(a.Adapter);
            using var outputs = session.Run(ro, names, values, session.OutputNames);
            var result = new Dictionary<string, TensorData>(StringComparer.Ordinal);
            for (var i = 0; i < outputs.Count; i++)
            {
                var o = outputs[i];
                if (!o.IsTensor) continue;
                var info = o.GetTensorTypeAndShape();
                switch (info.ElementDataType)
                {
                    case TensorElementType.Float:
                        result[session.OutputNames[i]] = TensorData.Float(o.GetTensorDataAsSpan<float>().ToArray(), info.Shape);
                        break;
                    case TensorElementType.Int64:
                        result[session.OutputNames[i]] = TensorData.Int64(o.GetTensorDataAsSpan<long>().ToArray(), info.Shape);
                        break;
                }
            }
            return new ModelOutput(version, result);
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    public TResult Run<TResult>(Func<InferenceSession, TResult> run)
    {
        ArgumentNullException.ThrowIfNull(run);
        using var lease = Lease();
        return run(lease.Session);
    }

    private SwappableInferenceSession.Lease Lease()
    {
        Volatile.Write(ref _lastUse, timeProvider.GetTimestamp());
        if (sessions.Current is null) ensureLoaded();
        return sessions.Acquire();
    }
}
