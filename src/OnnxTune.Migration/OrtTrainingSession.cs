using System.Collections;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Migration.Import;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training;
using OnnxTune.Training.Schedules;

namespace OnnxTune.Migration;

/// <summary>
/// ONNX Runtime's on-device <c>TrainingSession</c> (Microsoft.ML.OnnxRuntime.Training) with the same members, over
/// OnnxTune's <see cref="TrainingEngine"/> and the stock <see cref="InferenceSession"/>. It opens the folder ORT's
/// <c>generate_artifacts</c> wrote: the eval and optimizer models and the state are imported
/// (<see cref="OrtArtifactImporter"/>) into <c>onnxtune/</c> next to the eval model, and OnnxTune re-derives the
/// training graph (ORT's training model, built of com.microsoft gradient ops, is not read). Inputs are positional, as in ORT: the eval model's
/// non-parameter inputs in order (data, then labels; int32 labels are accepted).
/// Named <c>OrtTrainingSession</c> so it never clashes with ORT's type under <c>using Microsoft.ML.OnnxRuntime;</c>.
/// </summary>
public sealed class OrtTrainingSession : IDisposable
{
    /// <summary>Folder, next to the eval model, that holds the imported OnnxTune artifacts.</summary>
    public const string ImportFolderName = "onnxtune";

    private readonly TrainingEngine _engine;
    private readonly OrtCheckpointState _state;
    private readonly string _artifacts;
    private readonly IReadOnlyList<string> _inputs;
    private LinearSchedule? _linear;
    private long _schedulerStep;
    private bool _disposed;

    /// <summary>Creates a session over the ORT artifacts that <paramref name="evalModelPath"/> and <paramref name="optimizerModelPath"/> belong to.</summary>
    /// <exception cref="OrtImportException">The artifacts or the state cannot be imported (named in the message).</exception>
    public OrtTrainingSession(OrtCheckpointState state, string trainModelPath, string evalModelPath, string optimizerModelPath)
        : this(null, state, trainModelPath, evalModelPath, optimizerModelPath) { }

    /// <summary>Creates a session without a given eval model path: <c>eval_model.onnx</c> next to the training model is used.</summary>
    public OrtTrainingSession(OrtCheckpointState state, string trainModelPath, string optimizerModelPath)
        : this(null, state, trainModelPath, System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(trainModelPath))!, "eval_model.onnx"), optimizerModelPath) { }

    /// <summary>Creates a session; of <paramref name="options"/> the intra-op thread count is used.</summary>
    public OrtTrainingSession(SessionOptions? options, OrtCheckpointState state, string trainModelPath, string evalModelPath, string optimizerModelPath)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentException.ThrowIfNullOrEmpty(evalModelPath);
        ArgumentException.ThrowIfNullOrEmpty(optimizerModelPath);
        _ = trainModelPath; // OnnxTune derives its own training graph; ORT's (com.microsoft gradient ops) is not read
        var ortDir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(evalModelPath))!;
        _artifacts = System.IO.Path.Combine(ortDir, ImportFolderName);
        string? checkpointDir = null;
        if (state.Ort is { } ort)
        {
            var c = OrtArtifactImporter.Convert(OnnxModelReader.Load(evalModelPath), evalModelPath, OnnxModelReader.Load(optimizerModelPath), optimizerModelPath, ort, new OrtImportOptions());
            OrtArtifactImporter.Write(c, ortDir, _artifacts);
        }
        else
        {
            if (!File.Exists(System.IO.Path.Combine(_artifacts, ArtifactFiles.ManifestFileName)))
                throw new OrtImportException(OrtImportErrorKind.MissingFile, _artifacts,
                    $"'{state.Path}' is an OnnxTune checkpoint, but '{_artifacts}' holds no imported artifacts; load the ORT checkpoint once so the folder is imported.");
            checkpointDir = state.Path;
        }
        var threads = options?.IntraOpNumThreads ?? 0;
        _engine = TrainingEngine.Open(_artifacts, new TrainingEngineOptions { IntraOpThreads = threads, CheckpointDirectory = checkpointDir });
        _inputs = (_engine.Manifest.Properties.GetValueOrDefault(OrtArtifactImporter.DataInputsProperty) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries);
        _state = state;
        state.Bind(_engine, _artifacts);
    }

    /// <summary>The OnnxTune artifacts folder the session trains.</summary>
    public string ArtifactsDirectory => _artifacts;

    /// <summary>The engine underneath, for OnnxTune features ORT's API lacks.</summary>
    public TrainingEngine Engine => _engine;

    /// <summary>Forward + backward; accumulates the gradients. Returns the loss (one scalar float tensor, named after the loss).</summary>
    public IDisposableReadOnlyCollection<OrtValue> TrainStep(IReadOnlyCollection<OrtValue> inputValues)
    {
        var loss = TrainLoss(inputValues);
        return new ValueList([OrtValue.CreateTensorValueFromMemory(new[] { loss }, [])]);
    }

    /// <summary>ORT's <see cref="FixedBufferOnnxValue"/> overload: returns the loss as a named value.</summary>
    public IDisposableReadOnlyCollection<NamedOnnxValue> TrainStep(IReadOnlyCollection<FixedBufferOnnxValue> inputValues) =>
        Named(TrainLoss(FixedBuffers.Values(inputValues)));

    /// <summary>ORT's overload with pre-allocated outputs: writes the loss into the first output (a float scalar).</summary>
    public void TrainStep(IReadOnlyCollection<FixedBufferOnnxValue> inputValues, IReadOnlyCollection<FixedBufferOnnxValue> outputValues) =>
        FixedBuffers.WriteScalar(outputValues, TrainLoss(FixedBuffers.Values(inputValues)));

    /// <summary>Forward + loss with the current parameters. Returns the loss.</summary>
    public IDisposableReadOnlyCollection<OrtValue> EvalStep(IReadOnlyCollection<OrtValue> inputValues) =>
        new ValueList([OrtValue.CreateTensorValueFromMemory(new[] { EvalLoss(inputValues) }, [])]);

    /// <summary>ORT's overload with pre-allocated outputs: writes the loss into the first output.</summary>
    public void EvalStep(IReadOnlyCollection<FixedBufferOnnxValue> inputValues, IReadOnlyCollection<FixedBufferOnnxValue> outputValues) =>
        FixedBuffers.WriteScalar(outputValues, EvalLoss(FixedBuffers.Values(inputValues)));

    /// <summary>
    /// Discards the accumulated gradients before the next <see cref="TrainStep(IReadOnlyCollection{OrtValue})"/>. After
    /// <see cref="OptimizerStep"/> OnnxTune starts from fresh gradients anyway, so the usual ORT loop
    /// (TrainStep, OptimizerStep, LazyResetGrad) behaves the same.
    /// </summary>
    /// <exception cref="NotSupportedException">Gradients are pending (TrainStep without OptimizerStep since): OnnxTune
    /// cannot drop them without an update.</exception>
    public void LazyResetGrad()
    {
        ThrowIfDisposed();
        if (_engine.AccumulatedSteps > 0)
            throw new NotSupportedException($"LazyResetGrad with {_engine.AccumulatedSteps} accumulated train step(s) and no OptimizerStep since: OnnxTune discards gradients only by applying them (call OptimizerStep first).");
    }

    /// <summary>Sets a constant learning rate.</summary>
    /// <exception cref="InvalidOperationException">A linear scheduler is registered.</exception>
    public void SetLearningRate(float learningRate)
    {
        ThrowIfDisposed();
        if (_linear is not null) throw new InvalidOperationException("Cannot set constant LR while using LR scheduler.");
        _engine.LearningRate = learningRate;
    }

    /// <summary>The learning rate of the next update.</summary>
    public float GetLearningRate() => (float)_engine.LearningRate;

    /// <summary>
    /// ORT's linear scheduler: the rate rises from 0 to <paramref name="initialLearningRate"/> over
    /// <paramref name="warmupStepCount"/> scheduler steps, then falls linearly to 0 at <paramref name="totalStepCount"/>.
    /// </summary>
    public void RegisterLinearLRScheduler(long warmupStepCount, long totalStepCount, float initialLearningRate)
    {
        ThrowIfDisposed();
        if (warmupStepCount < 0 || totalStepCount <= 0 || warmupStepCount > totalStepCount)
            throw new ArgumentException($"Invalid linear schedule: warm-up {warmupStepCount} and total {totalStepCount} steps.");
        _linear = new LinearSchedule(warmupStepCount, totalStepCount, initialLearningRate);
        _schedulerStep = 0;
        _engine.LearningRate = _linear.At(0);
    }

    /// <summary>Advances the registered scheduler by one step and sets the learning rate.</summary>
    /// <exception cref="InvalidOperationException">No scheduler is registered.</exception>
    public void SchedulerStep()
    {
        ThrowIfDisposed();
        var linear = _linear ?? throw new InvalidOperationException("Cannot take scheduler step without registering a valid LR scheduler.");
        _engine.LearningRate = linear.At(++_schedulerStep);
    }

    /// <summary>Applies the accumulated gradients (the optimizer the ORT optimizer model describes).</summary>
    public void OptimizerStep()
    {
        ThrowIfDisposed();
        _engine.OptimizerStep();
    }

    /// <summary>Writes the inference model with the trained weights, keeping only <paramref name="graphOutputNames"/> as outputs.</summary>
    /// <exception cref="ArgumentException">A name is not an output of the model.</exception>
    public void ExportModelForInferencing(string inferenceModelPath, IReadOnlyCollection<string> graphOutputNames)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(graphOutputNames);
        _engine.ExportInferenceModel(inferenceModelPath);
        var model = OnnxModelReader.Load(inferenceModelPath);
        var outputs = model.Graph.Output.ToDictionary(o => o.Name, StringComparer.Ordinal);
        foreach (var name in graphOutputNames)
            if (!outputs.ContainsKey(name))
                throw new ArgumentException($"'{name}' is not an output of the inference model (outputs: {string.Join(", ", outputs.Keys)}).", nameof(graphOutputNames));
        if (graphOutputNames.Count == 0 || graphOutputNames.Count == outputs.Count) return;
        model.Graph.Output.Clear();
        foreach (var name in graphOutputNames) model.Graph.Output.Add(outputs[name]);
        OnnxModelWriter.Save(model, inferenceModelPath);
    }

    /// <summary>All trainable parameters in one float buffer, in the eval model's parameter order.</summary>
    /// <exception cref="NotSupportedException"><paramref name="onlyTrainable"/> is false and the model has frozen parameters
    /// (OnnxTune keeps them as constants of the graphs).</exception>
    public OrtValue ToBuffer(bool onlyTrainable)
    {
        ThrowIfDisposed();
        RequireTrainableOnly(onlyTrainable);
        var all = _engine.ParameterNames.SelectMany(_engine.GetParameter).ToArray();
        return OrtValue.CreateTensorValueFromMemory(all, [all.Length]);
    }

    /// <summary>Loads the trainable parameters from a buffer written by <see cref="ToBuffer"/>.</summary>
    /// <exception cref="ArgumentException">Not a 1-D float tensor of the trainable parameters' total size.</exception>
    public void FromBuffer(OrtValue buffer)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(buffer);
        var info = buffer.GetTensorTypeAndShape();
        if (buffer.OnnxType != OnnxValueType.ONNX_TYPE_TENSOR || info.ElementDataType != TensorElementType.Float || info.Shape.Length != 1)
            throw new ArgumentException("Incorrect buffer received. Expected a contiguous 1-D float tensor buffer.", nameof(buffer));
        var sizes = _engine.Manifest.TrainableParameters.Select(p => p.FixedDims.Aggregate(1L, (a, b) => a * b)).ToList();
        var total = sizes.Sum();
        if (info.Shape[0] != total)
            throw new ArgumentException($"Incorrect buffer size received. Expected {total} (trainable parameters). Actual size: {info.Shape[0]}", nameof(buffer));
        var data = buffer.GetTensorDataAsSpan<float>();
        long offset = 0;
        for (var i = 0; i < sizes.Count; i++)
        {
            _engine.SetParameter(_engine.ParameterNames[i], data.Slice((int)offset, (int)sizes[i]));
            offset += sizes[i];
        }
    }

    /// <summary>Input names of the training (or eval) model, in the order the step methods take them.</summary>
    public List<string> InputNames(bool training) => [.. _inputs];

    /// <summary>Output names: the loss.</summary>
    public List<string> OutputNames(bool training) => [_engine.Manifest.Loss.LossOutputName];

    /// <summary>Releases the engine.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _state.Dispose();
        _engine.Dispose();
    }

    private void RequireTrainableOnly(bool onlyTrainable)
    {
        if (!onlyTrainable && _engine.Manifest.FrozenParameters.Count > 0)
            throw new NotSupportedException($"ToBuffer(onlyTrainable: false) with {_engine.Manifest.FrozenParameters.Count} frozen parameter(s): OnnxTune keeps frozen parameters as constants of the graphs; use onlyTrainable: true.");
    }

    private float TrainLoss(IReadOnlyCollection<OrtValue> inputs)
    {
        ThrowIfDisposed();
        return _engine.TrainStep(Batch(inputs));
    }

    private float EvalLoss(IReadOnlyCollection<OrtValue> inputs)
    {
        ThrowIfDisposed();
        return _engine.EvalStep(Batch(inputs)).Loss;
    }

    private TrainingBatch Batch(IReadOnlyCollection<OrtValue> values)
    {
        if (values.Count != _inputs.Count)
            throw new ArgumentException($"The model takes {_inputs.Count} inputs ({string.Join(", ", _inputs)}); {values.Count} were given.", nameof(values));
        var batch = new TrainingBatch();
        var label = _engine.Manifest.Loss.LabelName;
        var i = 0;
        foreach (var v in values)
        {
            var name = _inputs[i++];
            var info = v.GetTensorTypeAndShape();
            var shape = info.Shape;
            switch (info.ElementDataType)
            {
                case TensorElementType.Float when name == label:
                    batch.WithLabels(v.GetTensorDataAsSpan<float>().ToArray(), shape);
                    break;
                case TensorElementType.Float:
                    batch.Add(name, v.GetTensorDataAsSpan<float>().ToArray(), shape);
                    break;
                case TensorElementType.Int32 or TensorElementType.Int64:
                    var longs = info.ElementDataType == TensorElementType.Int64 ? v.GetTensorDataAsSpan<long>().ToArray()
                        : v.GetTensorDataAsSpan<int>().ToArray().Select(x => (long)x).ToArray();
                    if (name == label) batch.WithLabels(longs, shape);
                    else batch.Add(name, longs, shape);
                    break;
                case TensorElementType.Bool:
                    batch.Add(name, v.GetTensorDataAsSpan<bool>().ToArray(), shape);
                    break;
                default:
                    throw new ArgumentException($"Input '{name}' has element type {info.ElementDataType}; float, int32, int64 and bool inputs are supported.", nameof(values));
            }
        }
        return batch;
    }

    private IDisposableReadOnlyCollection<NamedOnnxValue> Named(float loss) =>
        new NamedList([NamedOnnxValue.CreateFromTensor(_engine.Manifest.Loss.LossOutputName, new DenseTensor<float>(new[] { loss }, []))]);

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private sealed record LinearSchedule(long Warmup, long Total, float Initial)
    {
        // onnxruntime/orttraining/training_api/lr_scheduler.cc LinearLRScheduler::ComputeLRMultiplicativeFactor.
        public double At(long step) => Initial * (step < Warmup
            ? (double)step / Math.Max(1, Warmup)
            : Math.Max(0.0, (double)(Total - step) / Math.Max(1, Total - Warmup)));
    }

    private sealed class ValueList(List<OrtValue> items) : IDisposableReadOnlyCollection<OrtValue>
    {
        public int Count => items.Count;
        public OrtValue this[int index] => items[index];
        public IEnumerator<OrtValue> GetEnumerator() => items.GetEnumerator();
        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
        public void Dispose() { foreach (var v in items) v.Dispose(); }
    }

    private sealed class NamedList(List<NamedOnnxValue> items) : IDisposableReadOnlyCollection<NamedOnnxValue>
    {
        public int Count => items.Count;
        public NamedOnnxValue this[int index] => items[index];
        public IEnumerator<NamedOnnxValue> GetEnumerator() => items.GetEnumerator();
        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
        public void Dispose() { }
    }
}
