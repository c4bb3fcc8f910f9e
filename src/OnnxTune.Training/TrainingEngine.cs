using System.Diagnostics;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Adapters;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.Graphs;
using OnnxTune.Training.Optimizers;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Schedules;
using OnnxTune.Training.Sessions;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Training;

/// <summary>
/// Trains over an artifacts folder with the plain ONNX Runtime <see cref="InferenceSession"/>: forward + backward
/// with gradient accumulation (<see cref="TrainStep"/>), evaluation (<see cref="EvalStep"/>) and optimizer updates
/// (<see cref="OptimizerStep"/>). Parameters, gradients and optimizer state live in <see cref="OrtValue"/>s for the
/// session's lifetime and are bound once per buffer parity; each run reads one buffer and writes its twin.
/// Not thread-safe: use one session from one thread at a time.
/// </summary>
public sealed class TrainingEngine : IDisposable
{
    private const string LazyResetGradInput = ArtifactContract.LazyResetGradInput;

    private const string GradBufferSuffix = ArtifactContract.AccumulationBufferSuffix;

    private const string GradOutputSuffix = ArtifactContract.AccumulationOutputSuffix;

    private static readonly HashSet<string> RandomOps = ["Dropout", "RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli", "Multinomial"];

    private readonly string _directory;
    private readonly SessionOptions _sessionOptions;
    private readonly RunOptions _runOptions = new();
    // The artifacts' training graph (accumulating) is opened when a step first accumulates, unless no fresh variant exists.
    private InferenceSession? _train;
    private readonly int? _seed;
    private readonly InferenceSession? _trainFresh;
    private readonly InferenceSession _eval;
    private readonly InferenceSession _optimizer;
    private readonly TensorStore _store;
    private readonly FusedCpuOptimizer? _fusedOptimizer;
    private readonly OrtIoBinding?[,] _trainBindings = new OrtIoBinding?[2, 2];
    private readonly OrtIoBinding?[,] _freshBindings = new OrtIoBinding?[2, 2];
    private readonly OrtIoBinding?[,] _optimizerBindings = new OrtIoBinding?[2, 2];
    private readonly OrtIoBinding?[] _evalBindings = new OrtIoBinding?[2];
    private readonly OrtValue _loss;
    private readonly TensorElementType _lossType;
    private readonly OrtValue _lazyTrue;
    private readonly OrtValue _lazyFalse;
    private readonly float[] _lrBuffer = new float[1];
    private readonly long[] _stepBuffer = new long[1];
    private readonly OrtValue _lrValue;
    private readonly OrtValue _stepValue;
    private readonly BatchSchema _trainSchema;
    private readonly BatchSchema _evalSchema;
    private readonly IReadOnlyList<string> _stateSuffixes;
    private readonly List<StateBuffer> _stateBuffers = [];
    private int _stateParity;
    private int _paramParity;
    private int _gradParity;
    private bool _resetPending = true;
    private double _learningRate;
    private ILearningRateSchedule? _schedule;
    private readonly bool _rebindInputs;
    private bool _disposed;

    private TrainingEngine(string directory, ArtifactManifest manifest, TrainingEngineOptions options)
    {
        _directory = directory;
        Manifest = manifest;
        _learningRate = manifest.Optimizer.LearningRate;
        _rebindInputs = options.ExecutionProvider != ExecutionProvider.Cpu || options.RebindInputsEachRun;
        _stateSuffixes = OptimizerGraphBuilder.StateSuffixes(manifest.Optimizer);
        var allocatedBefore = GC.GetTotalAllocatedBytes(precise: false);
        var created = new List<IDisposable>();
        try
        {
            _sessionOptions = CreateSessionOptions(options);
            created.Add(_sessionOptions);
            _seed = options.Seed;
            var trainingModel = LoadModel(manifest.Files.TrainingModel, options.Seed);
            var fresh = FreshGradientGraph.TryCreate(trainingModel, manifest.TrainableParameters.Select(p => p.Name).ToArray());
            if (fresh is not null)
            {
                _trainFresh = CreateSession(manifest.Files.TrainingModel, OnnxModelWriter.ToBytes(fresh));
                created.Add(_trainFresh);
            }
            else
            {
                _train = CreateSession(manifest.Files.TrainingModel, OnnxModelWriter.ToBytes(trainingModel));
                created.Add(_train);
            }
            _eval = CreateSession(manifest.Files.EvalModel, options.Seed);
            created.Add(_eval);
            _optimizer = CreateSession(manifest.Files.OptimizerModel, seed: null);
            created.Add(_optimizer);

            var parameters = manifest.TrainableParameters.Select(p => (p.Name, ToOrt(p), p.FixedDims)).ToList();
            foreach (var spec in manifest.NonTrainableState)
            {
                var type = ToOrt(spec);
                var shape = spec.FixedDims;
                var buffers = new[] { OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape), OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape) };
                created.AddRange(buffers);
                _stateBuffers.Add(new StateBuffer(spec.Name, spec.Name + TrainingGraphBuilder.StateOutputSuffix, type, shape, buffers));
            }
            CheckArtifacts(parameters, trainingModel.Graph);
            var fused = UseFusedOptimizer(options);
            _store = new TensorStore(parameters, _stateSuffixes, inPlaceUpdates: fused, accumulating: _trainFresh is null);
            created.Add(_store);
            if (fused)
            {
                _fusedOptimizer = new FusedCpuOptimizer(Manifest.Optimizer, _store.Slots, options.IntraOpThreads > 0 ? options.IntraOpThreads : Environment.ProcessorCount,
                    LearningRateScaling.Resolve(options.LearningRateScales, _store.Slots.Select(s => s.Name).ToList()));
                created.Add(_fusedOptimizer);
            }
            OptimizerExecution = _fusedOptimizer is null ? OptimizerExecution.Graph : OptimizerExecution.Fused;
            if (_fusedOptimizer is null && LearningRateScaling.Resolve(options.LearningRateScales, _store.Slots.Select(s => s.Name).ToList()) is not null)
                throw new TrainingOptionsException(
                    "TrainingEngineOptions.LearningRateScales sets per-parameter learning rates, which only the fused CPU optimizer applies; this session runs the optimizer graph (one learning rate). Use OptimizerExecution.Auto or Fused on the CPU, or leave LearningRateScales null.");

            var lossName = manifest.Loss.LossOutputName;
            _lossType = FirstTrainSession.OutputMetadata[lossName].ElementDataType;
            _loss = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _lossType, []);
            created.Add(_loss);
            _lazyTrue = OrtValue.CreateTensorValueFromMemory(new[] { true }, []);
            created.Add(_lazyTrue);
            _lazyFalse = OrtValue.CreateTensorValueFromMemory(new[] { false }, []);
            created.Add(_lazyFalse);
            _lrValue = OrtValue.CreateTensorValueFromMemory(_lrBuffer, []);
            created.Add(_lrValue);
            _stepValue = OrtValue.CreateTensorValueFromMemory(_stepBuffer, []);
            created.Add(_stepValue);

            _trainSchema = BatchSchema.Create(manifest, FirstTrainSession, "training");
            _evalSchema = BatchSchema.Create(manifest, _eval, "eval");

            LoadInferenceModelState();
            var checkpoint = options.CheckpointDirectory ?? Path.Combine(directory, manifest.Files.Checkpoint);
            if (options.CheckpointDirectory is not null || CheckpointStore.Exists(checkpoint))
                LoadCheckpoint(checkpoint);
            else
                LoadInferenceModelWeights();
            if (options.ReleaseLoadMemory) Sessions.LoadMemoryRelease.AfterOpen(allocatedBefore);
        }
        catch
        {
            for (var i = created.Count - 1; i >= 0; i--) created[i].Dispose();
            _runOptions.Dispose();
            throw;
        }
    }

    /// <summary>Opens a session over an artifacts folder.</summary>
    /// <exception cref="OnnxTuneException">The folder, manifest, graphs or checkpoint are missing or inconsistent,
    /// or the requested execution provider is unavailable (<see cref="ExecutionProviderUnavailableException"/>).</exception>
    public static TrainingEngine Open(string artifactsDirectory, TrainingEngineOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(artifactsDirectory);
        var manifest = ArtifactManifest.Load(artifactsDirectory);
        return new TrainingEngine(artifactsDirectory, manifest, options ?? new TrainingEngineOptions());
    }

    /// <summary>The artifacts manifest.</summary>
    public ArtifactManifest Manifest { get; }

    /// <summary>How <see cref="OptimizerStep"/> runs in this session: <see cref="OptimizerExecution.Graph"/> or <see cref="OptimizerExecution.Fused"/>.</summary>
    public OptimizerExecution OptimizerExecution { get; }

    /// <summary>Completed optimizer updates.</summary>
    public long Step { get; private set; }

    /// <summary>Train steps whose gradients are accumulated and not yet applied.</summary>
    public int AccumulatedSteps { get; private set; }

    /// <summary>Trainable parameter names, in manifest order.</summary>
    public IReadOnlyList<string> ParameterNames => Manifest.TrainableParameters.Select(p => p.Name).ToArray();

    /// <summary>Bytes held for parameters, gradients and optimizer state.</summary>
    public long StateBytes => _store.TotalBytes;

    /// <summary>
    /// Learning rate of the next update. With a <see cref="Schedule"/> it is the schedule's value and cannot be set.
    /// </summary>
    public double LearningRate
    {
        get => _schedule?.LearningRateAt(Step) ?? _learningRate;
        set
        {
            if (_schedule is not null)
                throw new InvalidOperationException("A learning-rate schedule is attached; set Schedule to null before setting LearningRate.");
            if (!double.IsFinite(value) || value < 0)
                throw new ArgumentOutOfRangeException(nameof(value), value, "The learning rate must be finite and >= 0.");
            _learningRate = value;
        }
    }

    /// <summary>Learning-rate schedule evaluated at <see cref="Step"/> before each update (null: constant <see cref="LearningRate"/>).</summary>
    public ILearningRateSchedule? Schedule
    {
        get => _schedule;
        set => _schedule = value;
    }

    /// <summary>Bytes held by the parameters, gradients and optimizer states.</summary>
    internal long TensorBytes => _store.TotalBytes;

    /// <summary>Total <see cref="Stopwatch"/> ticks spent inside the training graph's ONNX Runtime runs (benchmark breakdown).</summary>
    internal long TrainRunTicks { get; private set; }

    /// <summary>Total <see cref="Stopwatch"/> ticks spent inside the optimizer graph's ONNX Runtime runs.</summary>
    internal long OptimizerRunTicks { get; private set; }

    /// <summary>Forward + backward on one batch; adds the gradients to the accumulated ones. Returns the loss.</summary>
    /// <exception cref="BatchValidationException">The batch does not fit the training graph.</exception>
    public float TrainStep(TrainingBatch batch)
    {
        ThrowIfDisposed();
        // A step right after an update starts from zero gradients: the fresh-gradient graph skips the accumulation.
        var fresh = _resetPending && _trainFresh is not null;
        var session = fresh ? _trainFresh! : AccumulatingSession();
        var binding = fresh ? FreshBinding(_paramParity, _gradParity) : TrainBinding(_paramParity, _gradParity);
        var inputs = _trainSchema.Wrap(batch);
        try
        {
            foreach (var (name, value) in inputs) binding.BindInput(name, value);
            if (!fresh) binding.BindInput(LazyResetGradInput, _resetPending ? _lazyTrue : _lazyFalse);
            foreach (var s in _stateBuffers)
            {
                binding.BindInput(s.Name, s.Values[_stateParity]);
                binding.BindOutput(s.Output, s.Values[1 - _stateParity]);
            }
            var start = Stopwatch.GetTimestamp();
            session.RunWithBinding(_runOptions, binding);
            TrainRunTicks += Stopwatch.GetTimestamp() - start;
        }
        finally
        {
            foreach (var (_, value) in inputs) value.Dispose();
        }
        if (!fresh) _gradParity ^= 1; // a fresh run wrote the current buffer; an accumulating one wrote the other
        if (_stateBuffers.Count > 0) _stateParity ^= 1; // the run wrote the updated running statistics to the other buffers
        _resetPending = false;
        AccumulatedSteps++;
        return ReadScalar(_loss, _lossType);
    }

    /// <summary>Applies the accumulated gradients with the current learning rate and starts a new accumulation.</summary>
    /// <exception cref="InvalidOperationException">No <see cref="TrainStep"/> ran since the last update.</exception>
    public void OptimizerStep()
    {
        ThrowIfDisposed();
        if (AccumulatedSteps == 0)
            throw new InvalidOperationException("OptimizerStep needs gradients: call TrainStep at least once after the previous OptimizerStep.");
        _lrBuffer[0] = (float)LearningRate;
        _stepBuffer[0] = Step + 1;
        if (_fusedOptimizer is not null)
        {
            var started = Stopwatch.GetTimestamp();
            _fusedOptimizer.Step(_paramParity, _gradParity, _lrBuffer[0], _stepBuffer[0]);
            OptimizerRunTicks += Stopwatch.GetTimestamp() - started;
        }
        else
        {
            var binding = OptimizerBinding(_paramParity, _gradParity);
            binding.BindInput(OptimizerGraphBuilder.LearningRateInput, _lrValue);
            binding.BindInput(OptimizerGraphBuilder.StepInput, _stepValue);
            var start = Stopwatch.GetTimestamp();
            _optimizer.RunWithBinding(_runOptions, binding);
            OptimizerRunTicks += Stopwatch.GetTimestamp() - start;
            _paramParity ^= 1; // the graph wrote the other buffers; the fused kernel updates in place
        }
        Step++;
        _resetPending = true;
        AccumulatedSteps = 0;
    }

    /// <summary>Forward + loss on one batch with the current parameters; returns the loss and model outputs.</summary>
    /// <exception cref="BatchValidationException">The batch does not fit the eval graph.</exception>
    public EvalResult EvalStep(TrainingBatch batch)
    {
        ThrowIfDisposed();
        var binding = EvalBinding(_paramParity);
        var inputs = _evalSchema.Wrap(batch);
        try
        {
            foreach (var (name, value) in inputs) binding.BindInput(name, value);
            foreach (var s in _stateBuffers) binding.BindInput(s.Name, s.Values[_stateParity]);
            // Outputs allocated by the previous run keep its batch size: let ORT allocate fresh ones each time.
            binding.ClearBoundOutputs();
            foreach (var name in _eval.OutputNames) binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
            _eval.RunWithBinding(_runOptions, binding);
        }
        finally
        {
            foreach (var (_, value) in inputs) value.Dispose();
        }
        using var outputs = binding.GetOutputValues();
        var names = _eval.OutputNames;
        float loss = float.NaN;
        var result = new Dictionary<string, EvalOutput>(StringComparer.Ordinal);
        for (var i = 0; i < names.Count; i++)
        {
            var info = outputs[i].GetTensorTypeAndShape();
            if (names[i] == Manifest.Loss.LossOutputName)
                loss = ReadScalar(outputs[i], info.ElementDataType);
            else
                result[names[i]] = new EvalOutput(info.ElementDataType, info.Shape, CopyOut(outputs[i], info.ElementDataType));
        }
        return new EvalResult(loss, result);
    }

    /// <summary>A float32 copy of a trainable parameter's current value.</summary>
    /// <exception cref="OnnxTuneException">No trainable parameter has that name.</exception>
    public float[] GetParameter(string name)
    {
        ThrowIfDisposed();
        var slot = Slot(name);
        return TensorStore.ReadFloats(slot.Values[_paramParity], slot.Type);
    }

    /// <summary>Overwrites a trainable parameter (e.g. to start from weights initialised elsewhere).</summary>
    /// <exception cref="OnnxTuneException">No trainable parameter has that name, or the length differs.</exception>
    public void SetParameter(string name, ReadOnlySpan<float> values)
    {
        ThrowIfDisposed();
        var slot = Slot(name);
        if (values.Length != slot.ElementCount)
            throw new OnnxTuneException($"Parameter '{name}' has {slot.ElementCount} elements; {values.Length} values were given.");
        TensorStore.WriteFloats(slot.Values[_paramParity], slot.Type, values);
    }

    /// <summary>Names of the non-trainable state tensors (BatchNormalization running statistics) the train steps update.</summary>
    public IReadOnlyList<string> NonTrainableStateNames => _stateBuffers.Select(s => s.Name).ToArray();

    /// <summary>A float32 copy of a non-trainable state tensor's current value (e.g. a BatchNormalization running_var).</summary>
    /// <exception cref="OnnxTuneException">No state tensor has that name.</exception>
    public float[] GetNonTrainableState(string name)
    {
        ThrowIfDisposed();
        var s = StateBufferOf(name);
        return TensorStore.ReadFloats(s.Values[_stateParity], s.Type);
    }

    /// <summary>Overwrites a non-trainable state tensor.</summary>
    /// <exception cref="OnnxTuneException">No state tensor has that name, or the length differs.</exception>
    public void SetNonTrainableState(string name, ReadOnlySpan<float> values)
    {
        ThrowIfDisposed();
        var s = StateBufferOf(name);
        var count = s.Shape.Aggregate(1L, (a, b) => a * b);
        if (values.Length != count)
            throw new OnnxTuneException($"State tensor '{name}' has {count} elements; {values.Length} values were given.");
        TensorStore.WriteFloats(s.Values[_stateParity], s.Type, values);
    }

    private StateBuffer StateBufferOf(string name) => _stateBuffers.FirstOrDefault(s => s.Name == name)
        ?? throw new OnnxTuneException($"'{name}' is not a non-trainable state tensor of these artifacts (state: {string.Join(", ", _stateBuffers.Select(s => s.Name))}).");

    /// <summary>A float32 copy of an optimizer state tensor (<c>&lt;p&gt;.exp_avg</c>, <c>&lt;p&gt;.momentum_buffer</c>...).</summary>
    /// <exception cref="OnnxTuneException">No state tensor has that name.</exception>
    public float[] GetOptimizerState(string name)
    {
        ThrowIfDisposed();
        foreach (var slot in _store.Slots)
            foreach (var state in slot.States)
                if (state.Name == name) return TensorStore.ReadFloats(state.Values[_paramParity], slot.Type);
        throw new OnnxTuneException($"'{name}' is not an optimizer state tensor of these artifacts (states use the suffixes {string.Join(", ", _stateSuffixes)}).");
    }

    /// <summary>
    /// Writes parameters, optimizer state, step, learning rate, schedule and <paramref name="userProperties"/> to
    /// <paramref name="directory"/> (atomically per file). Gradients accumulated but not applied are not saved.
    /// </summary>
    public void SaveCheckpoint(string directory, IReadOnlyDictionary<string, string>? userProperties = null)
    {
        ThrowIfDisposed();
        var tensors = new List<SafeTensor>();
        var parameters = new List<CheckpointTensor>();
        var states = new List<CheckpointTensor>();
        foreach (var slot in _store.Slots)
        {
            tensors.Add(new SafeTensor(slot.Name, ToSafe(slot.Type), slot.Shape, TensorStore.ReadBytes(slot.Values[_paramParity])));
            parameters.Add(new CheckpointTensor(slot.Name, TypeName(slot.Type), slot.Shape));
            foreach (var state in slot.States)
            {
                tensors.Add(new SafeTensor(state.Name, ToSafe(slot.Type), slot.Shape, TensorStore.ReadBytes(state.Values[_paramParity])));
                states.Add(new CheckpointTensor(state.Name, TypeName(slot.Type), slot.Shape));
            }
        }
        var stateTensors = new List<CheckpointTensor>();
        foreach (var s in _stateBuffers)
        {
            tensors.Add(new SafeTensor(s.Name, ToSafe(s.Type), s.Shape, TensorStore.ReadBytes(s.Values[_stateParity])));
            stateTensors.Add(new CheckpointTensor(s.Name, TypeName(s.Type), s.Shape));
        }
        var metadata = new CheckpointMetadata
        {
            NonTrainableState = stateTensors,
            Step = Step,
            LearningRate = _learningRate,
            Schedule = _schedule?.State,
            Optimizer = Manifest.Optimizer,
            Parameters = parameters,
            OptimizerStates = states,
            UserProperties = userProperties is null ? new Dictionary<string, string>() : new Dictionary<string, string>(userProperties),
        };
        CheckpointStore.Save(directory, metadata, tensors);
    }

    /// <summary>
    /// Restores parameters, optimizer state, step, learning rate and schedule from a checkpoint; pending
    /// accumulated gradients are discarded. Returns the checkpoint's user properties.
    /// </summary>
    /// <exception cref="CheckpointMismatchException">The checkpoint does not fit these artifacts (names the first mismatch).</exception>
    /// <exception cref="CheckpointFormatException">The checkpoint files are missing or corrupt.</exception>
    public IReadOnlyDictionary<string, string> LoadCheckpoint(string directory)
    {
        ThrowIfDisposed();
        var (meta, tensors) = CheckpointStore.Load(directory);
        CheckCheckpoint(directory, meta, tensors);
        var schedule = meta.Schedule is null ? null : LearningRateSchedules.FromState(meta.Schedule);
        foreach (var slot in _store.Slots)
        {
            TensorStore.WriteBytes(slot.Values[_paramParity], tensors.Get(slot.Name).Data);
            foreach (var state in slot.States)
                TensorStore.WriteBytes(state.Values[_paramParity], tensors.Get(state.Name).Data);
        }
        // Older checkpoints (or ones from eval-mode artifacts) carry no running statistics: those keep their values.
        var savedState = (meta.NonTrainableState ?? []).ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var s in _stateBuffers)
        {
            if (!savedState.TryGetValue(s.Name, out var t)) continue;
            if (!t.Shape.SequenceEqual(s.Shape))
                throw new CheckpointMismatchException($"Checkpoint '{directory}': state '{s.Name}' has shape [{string.Join(",", t.Shape)}], but the artifacts expect [{string.Join(",", s.Shape)}].");
            TensorStore.WriteBytes(s.Values[_stateParity], tensors.Get(s.Name).Data);
        }
        Step = meta.Step;
        _learningRate = meta.LearningRate;
        _schedule = schedule;
        _resetPending = true;
        AccumulatedSteps = 0;
        return meta.UserProperties;
    }

    /// <summary>
    /// Writes <c>inference_model.onnx</c> with the trained values under the same initializer names, atomically, to
    /// <paramref name="path"/>; it loads in a plain <see cref="InferenceSession"/>. With LoRA artifacts the model keeps
    /// its adapter branches (see <see cref="ExportMergedModel"/> for the plain model).
    /// </summary>
    public void ExportInferenceModel(string path) => ExportInferenceModel(path, Path.Combine(_directory, Manifest.Files.InferenceModel));

    /// <summary>
    /// Writes <paramref name="modelPath"/> with this engine's trained values in place of its initializers of the same
    /// names, atomically, to <paramref name="path"/>: for artifacts that train part of a larger model (the suffix of a
    /// frozen-prefix split), this exports the whole trained model.
    /// </summary>
    /// <exception cref="InvalidArtifactsException">The model lacks a trained tensor or holds it with another shape.</exception>
    public void ExportInferenceModel(string path, string modelPath)
    {
        ThrowIfDisposed();
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentException.ThrowIfNullOrEmpty(modelPath);
        OnnxModelWriter.Save(TrainedInferenceModel(modelPath), path);
    }

    /// <summary>
    /// Writes the inference model with every LoRA adapter folded into its weight (<c>W + scale·(B·A)</c> in W's own
    /// layout) and no adapter tensors or branches left: the source graph with trained weights, which any runtime
    /// serves. Without adapters it equals <see cref="ExportInferenceModel(string)"/>.
    /// </summary>
    public void ExportMergedModel(string path)
    {
        ThrowIfDisposed();
        ArgumentException.ThrowIfNullOrEmpty(path);
        var model = TrainedInferenceModel(Path.Combine(_directory, Manifest.Files.InferenceModel));
        OnnxModelWriter.Save(Manifest.Lora is { } lora ? LoraGraph.Merge(model, lora) : model, path);
    }

    /// <summary>
    /// Writes what training changed as an ONNX Runtime adapter file (<c>.onnx_adapter</c>: every trainable parameter
    /// and non-trainable state tensor, trained values) to <paramref name="adapterPath"/>, and the adapter-ready base
    /// model to <paramref name="basePath"/>: those tensors are graph inputs whose initializers are their defaults
    /// (LoRA tensors zero, the others their values before training), so the base alone is the untuned model and
    /// <c>RunOptions.AddActiveLoraAdapter</c> with the adapter gives the trained one. Both files are written atomically.
    /// </summary>
    /// <param name="adapterPath">The adapter file.</param>
    /// <param name="basePath">The adapter-ready base model (one per artifacts folder; every adapter trained from it fits it), or null to write the adapter alone.</param>
    /// <param name="adapterVersion">Recorded in the adapter file.</param>
    /// <param name="modelVersion">Recorded in the adapter file (the base model's version).</param>
    public void ExportAdapter(string adapterPath, string? basePath, int adapterVersion = 1, int modelVersion = 1)
    {
        ThrowIfDisposed();
        ArgumentException.ThrowIfNullOrEmpty(adapterPath);
        var parameters = new List<AdapterParameter>();
        foreach (var slot in _store.Slots)
            parameters.Add(new AdapterParameter(slot.Name, slot.Shape, slot.Type == TensorElementType.Double, TensorStore.ReadBytes(slot.Values[_paramParity])));
        foreach (var s in _stateBuffers)
            parameters.Add(new AdapterParameter(s.Name, s.Shape, s.Type == TensorElementType.Double, TensorStore.ReadBytes(s.Values[_stateParity])));
        if (basePath is not null)
        {
            var source = OnnxModelReader.Load(Path.Combine(_directory, Manifest.Files.InferenceModel));
            OnnxModelWriter.Save(LoraGraph.ToAdapterBase(source, Manifest.Lora, parameters.Select(p => p.Name)), basePath);
        }
        OnnxAdapterFile.Write(adapterPath, parameters, adapterVersion, modelVersion);
    }

    private global::Onnx.ModelProto TrainedInferenceModel(string source)
    {
        var model = OnnxModelReader.Load(source);
        var initializers = model.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var slot in _store.Slots)
        {
            if (!initializers.TryGetValue(slot.Name, out var t))
                throw new InvalidArtifactsException($"{source} has no initializer '{slot.Name}' for the trainable parameter of that name.");
            if (!t.Dims.SequenceEqual(slot.Shape))
                throw new InvalidArtifactsException($"{source}: initializer '{slot.Name}' has shape [{string.Join(",", t.Dims)}] but the trained parameter has [{string.Join(",", slot.Shape)}].");
            t.FloatData.Clear();
            t.DoubleData.Clear();
            t.ExternalData.Clear();
            t.DataLocation = global::Onnx.TensorProto.Types.DataLocation.Default;
            t.DataType = (int)(slot.Type == TensorElementType.Double ? DataType.Double : DataType.Float);
            t.RawData = ByteString.CopyFrom(slot.Values[_paramParity].GetTensorMutableRawData());
        }
        foreach (var s in _stateBuffers)
        {
            if (!initializers.TryGetValue(s.Name, out var t))
                throw new InvalidArtifactsException($"{source} has no initializer '{s.Name}' for the state tensor of that name.");
            t.FloatData.Clear();
            t.DoubleData.Clear();
            t.ExternalData.Clear();
            t.DataLocation = global::Onnx.TensorProto.Types.DataLocation.Default;
            t.DataType = (int)(s.Type == TensorElementType.Double ? DataType.Double : DataType.Float);
            t.RawData = ByteString.CopyFrom(s.Values[_stateParity].GetTensorMutableRawData());
        }
        return model;
    }

    /// <summary>Releases the sessions, bindings and every tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _trainBindings) b?.Dispose();
        foreach (var b in _freshBindings) b?.Dispose();
        foreach (var b in _optimizerBindings) b?.Dispose();
        foreach (var b in _evalBindings) b?.Dispose();
        _train?.Dispose();
        _trainFresh?.Dispose();
        _eval.Dispose();
        _optimizer.Dispose();
        _fusedOptimizer?.Dispose();
        _store.Dispose();
        foreach (var s in _stateBuffers) foreach (var v in s.Values) v.Dispose();
        _loss.Dispose();
        _lazyTrue.Dispose();
        _lazyFalse.Dispose();
        _lrValue.Dispose();
        _stepValue.Dispose();
        _runOptions.Dispose();
        _sessionOptions.Dispose();
    }

    // Bindings are built once per parity. On CPU a bound OrtValue is used in place, so later writes are seen.
    // On another device ORT copies an input at bind time, so the long-lived inputs are re-bound before each run.
    private bool UseFusedOptimizer(TrainingEngineOptions options)
    {
        if (options.OptimizerExecution == OptimizerExecution.Graph) return false;
        var file = Manifest.Files.OptimizerModel;
        string? problem = null;
        if (options.ExecutionProvider != ExecutionProvider.Cpu)
            problem = $"the fused optimizer runs on the CPU only (Device is {options.ExecutionProvider})";
        else if (!_optimizer.ModelMetadata.CustomMetadataMap.TryGetValue(OptimizerGraphBuilder.SignatureMetadataKey, out var signature))
            problem = $"{file} has no '{OptimizerGraphBuilder.SignatureMetadataKey}' metadata (a custom optimizer graph, or artifacts from an older OnnxTune)";
        else if (signature != OptimizerGraphBuilder.Signature(Manifest.Optimizer))
            problem = $"{file} computes '{signature}' but the manifest's optimizer is '{OptimizerGraphBuilder.Signature(Manifest.Optimizer)}'";
        if (problem is null) return true;
        if (options.OptimizerExecution == OptimizerExecution.Fused)
            throw new InvalidArtifactsException($"OptimizerExecution.Fused cannot be used: {problem}. Use OptimizerExecution.Graph or Auto.");
        return false;
    }

    private InferenceSession FirstTrainSession => _trainFresh ?? _train!;

    private InferenceSession AccumulatingSession()
    {
        if (_store.EnsureAccumulationBuffers()) _fusedOptimizer?.RefreshGradientAddresses(_store.Slots);
        // Read again rather than kept in memory: a training graph holds its frozen weights (tens of MB for a transformer).
        return _train ??= CreateSession(Manifest.Files.TrainingModel, OnnxModelWriter.ToBytes(LoadModel(Manifest.Files.TrainingModel, _seed)));
    }

    private OrtIoBinding FreshBinding(int pp, int gp)
    {
        if (_freshBindings[pp, gp] is { } existing)
        {
            if (_rebindInputs) BindParameters(existing, pp);
            return existing;
        }
        var b = _trainFresh!.CreateIoBinding();
        BindParameters(b, pp);
        foreach (var slot in _store.Slots)
            b.BindOutput(slot.Name + GradOutputSuffix, slot.Gradients[gp]);
        b.BindOutput(Manifest.Loss.LossOutputName, _loss);
        return _freshBindings[pp, gp] = b;
    }

    private OrtIoBinding TrainBinding(int pp, int gp)
    {
        if (_trainBindings[pp, gp] is { } existing)
        {
            if (_rebindInputs) BindTrainInputs(existing, pp, gp);
            return existing;
        }
        var b = _train!.CreateIoBinding();
        BindTrainInputs(b, pp, gp);
        foreach (var slot in _store.Slots)
            b.BindOutput(slot.Name + GradOutputSuffix, slot.Gradients[1 - gp]);
        b.BindOutput(Manifest.Loss.LossOutputName, _loss);
        return _trainBindings[pp, gp] = b;
    }

    private void BindTrainInputs(OrtIoBinding b, int pp, int gp)
    {
        foreach (var slot in _store.Slots)
        {
            b.BindInput(slot.Name, slot.Values[pp]);
            b.BindInput(slot.Name + GradBufferSuffix, slot.Gradients[gp]);
        }
    }

    private OrtIoBinding OptimizerBinding(int pp, int gp)
    {
        if (_optimizerBindings[pp, gp] is { } existing)
        {
            if (_rebindInputs) BindOptimizerInputs(existing, pp, gp);
            return existing;
        }
        var b = _optimizer.CreateIoBinding();
        BindOptimizerInputs(b, pp, gp);
        foreach (var slot in _store.Slots)
        {
            b.BindOutput(slot.Name + OptimizerGraphBuilder.OutputSuffix, slot.Values[1 - pp]);
            foreach (var state in slot.States)
                b.BindOutput(state.Name + OptimizerGraphBuilder.OutputSuffix, state.Values[1 - pp]);
        }
        return _optimizerBindings[pp, gp] = b;
    }

    private void BindOptimizerInputs(OrtIoBinding b, int pp, int gp)
    {
        foreach (var slot in _store.Slots)
        {
            b.BindInput(slot.Name, slot.Values[pp]);
            b.BindInput(slot.Name + OptimizerGraphBuilder.GradientSuffix, slot.Gradients[gp]);
            foreach (var state in slot.States)
                b.BindInput(state.Name, state.Values[pp]);
        }
    }

    private OrtIoBinding EvalBinding(int pp)
    {
        if (_evalBindings[pp] is { } existing)
        {
            if (_rebindInputs) BindEvalInputs(existing, pp);
            return existing;
        }
        var b = _eval.CreateIoBinding();
        BindEvalInputs(b, pp);
        return _evalBindings[pp] = b;
    }

    private void BindEvalInputs(OrtIoBinding b, int pp) => BindParameters(b, pp);

    private void BindParameters(OrtIoBinding b, int pp)
    {
        foreach (var slot in _store.Slots)
            b.BindInput(slot.Name, slot.Values[pp]);
    }

    private static SessionOptions CreateSessionOptions(TrainingEngineOptions options) =>
        OrtSessionFactory.CreateOptions(new OrtSessionSettings
        {
            Provider = options.ExecutionProvider,
            CudaDeviceId = options.CudaDeviceId,
            IntraOpThreads = options.IntraOpThreads,
            InterOpThreads = options.InterOpThreads,
            Spinning = options.Spinning,
            MemoryPattern = options.MemoryPattern,
            Configure = options.ConfigureSessionOptions,
        }, out _);

    private global::Onnx.ModelProto LoadModel(string fileName, int? seed)
    {
        var path = Path.Combine(_directory, fileName);
        if (!File.Exists(path))
            throw new InvalidArtifactsException($"Artifacts folder '{_directory}' lacks {fileName}.");
        var model = OnnxModelReader.Load(path);
        if (seed is null) return model;
        var index = 0;
        foreach (var node in model.Graph.Node)
        {
            if (!RandomOps.Contains(node.OpType) || !string.IsNullOrEmpty(node.Domain)) continue;
            var value = seed.Value + index++;
            var existing = node.Find("seed");
            if (existing is not null) node.Attribute.Remove(existing);
            node.Attribute.Add(node.OpType == "Dropout" ? Attr.Int("seed", value) : Attr.Float("seed", value));
        }
        return model;
    }

    private InferenceSession CreateSession(string fileName, int? seed)
    {
        var path = Path.Combine(_directory, fileName);
        if (seed is not null) return CreateSession(fileName, OnnxModelWriter.ToBytes(LoadModel(fileName, seed)));
        if (!File.Exists(path))
            throw new InvalidArtifactsException($"Artifacts folder '{_directory}' lacks {fileName}.");
        try
        {
            return new InferenceSession(path, _sessionOptions);
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidArtifactsException($"ONNX Runtime cannot load {path}: {e.Message}", e);
        }
    }

    private InferenceSession CreateSession(string fileName, byte[] model)
    {
        try
        {
            return new InferenceSession(model, _sessionOptions);
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidArtifactsException($"ONNX Runtime cannot load {Path.Combine(_directory, fileName)}: {e.Message}", e);
        }
    }

    private void CheckArtifacts(IReadOnlyList<(string Name, TensorElementType Type, long[] Shape)> parameters, global::Onnx.GraphProto trainingGraph)
    {
        var m = Manifest;
        var trainFile = m.Files.TrainingModel;
        var train = FirstTrainSession;
        var trainInputs = trainingGraph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var needed = new List<string>();
        foreach (var p in parameters)
        {
            RequireInput(train, trainFile, p.Name, p.Type, p.Shape);
            if (!trainInputs.Contains(p.Name + GradBufferSuffix))
                throw new InvalidArtifactsException($"{trainFile} has no input '{p.Name + GradBufferSuffix}'.");
            RequireOutput(train, trainFile, p.Name + GradOutputSuffix);
            RequireInput(_eval, m.Files.EvalModel, p.Name, p.Type, p.Shape);
            RequireInput(_optimizer, m.Files.OptimizerModel, p.Name, p.Type, p.Shape);
            RequireInput(_optimizer, m.Files.OptimizerModel, p.Name + OptimizerGraphBuilder.GradientSuffix, p.Type, p.Shape);
            RequireOutput(_optimizer, m.Files.OptimizerModel, p.Name + OptimizerGraphBuilder.OutputSuffix);
            foreach (var s in _stateSuffixes)
            {
                RequireInput(_optimizer, m.Files.OptimizerModel, p.Name + s, p.Type, p.Shape);
                RequireOutput(_optimizer, m.Files.OptimizerModel, p.Name + s + OptimizerGraphBuilder.OutputSuffix);
            }
        }
        if (!trainInputs.Contains(LazyResetGradInput))
            throw new InvalidArtifactsException($"{trainFile} has no input '{LazyResetGradInput}'.");
        RequireInput(_optimizer, m.Files.OptimizerModel, OptimizerGraphBuilder.LearningRateInput, TensorElementType.Float, []);
        RequireInput(_optimizer, m.Files.OptimizerModel, OptimizerGraphBuilder.StepInput, TensorElementType.Int64, []);
        RequireOutput(train, trainFile, m.Loss.LossOutputName);
        RequireOutput(_eval, m.Files.EvalModel, m.Loss.LossOutputName);

        var known = new HashSet<string>(m.Inputs.Select(i => i.Name), StringComparer.Ordinal) { LazyResetGradInput };
        foreach (var s in _stateBuffers)
        {
            RequireInput(train, trainFile, s.Name, s.Type, s.Shape);
            RequireOutput(train, trainFile, s.Output);
            RequireInput(_eval, m.Files.EvalModel, s.Name, s.Type, s.Shape);
            known.Add(s.Name);
        }
        if (m.Loss.Kind != LossKind.None && m.Loss.LabelName is { } label) known.Add(label);
        if (m.Loss.SampleWeightName is { } weights) known.Add(weights);
        if (m.Loss.DistillationTargetName is { } teacher) known.Add(teacher);
        if (m.Loss.DistillationWeightName is { } factors) known.Add(factors);
        foreach (var p in parameters) { known.Add(p.Name); known.Add(p.Name + GradBufferSuffix); }
        foreach (var name in trainInputs)
            if (!known.Contains(name))
                throw new InvalidArtifactsException($"{trainFile} has input '{name}', which the manifest lists neither as a data input, the label, the sample weights nor a trainable parameter.");
        foreach (var name in _eval.InputNames)
            if (!known.Contains(name))
                throw new InvalidArtifactsException($"{m.Files.EvalModel} has input '{name}', which the manifest lists neither as a data input, the label, the sample weights nor a trainable parameter.");
    }

    private static void RequireInput(InferenceSession s, string file, string name, TensorElementType type, long[] shape)
    {
        if (!s.InputMetadata.TryGetValue(name, out var meta))
            throw new InvalidArtifactsException($"{file} has no input '{name}'.");
        if (meta.ElementDataType != type)
            throw new InvalidArtifactsException($"{file}: input '{name}' is {meta.ElementDataType}, expected {type}.");
        if (meta.Dimensions.Length != shape.Length || meta.Dimensions.Where((d, i) => d >= 0 && d != shape[i]).Any())
            throw new InvalidArtifactsException($"{file}: input '{name}' has shape [{string.Join(",", meta.Dimensions)}], expected [{string.Join(",", shape)}].");
    }

    private static void RequireOutput(InferenceSession s, string file, string name)
    {
        if (!s.OutputMetadata.ContainsKey(name))
            throw new InvalidArtifactsException($"{file} has no output '{name}'.");
    }

    private void CheckCheckpoint(string directory, CheckpointMetadata meta, SafeTensorsFile tensors)
    {
        var expected = Manifest.Optimizer;
        if (meta.Optimizer.Kind != expected.Kind)
            throw new CheckpointMismatchException($"Checkpoint '{directory}' holds {meta.Optimizer.Kind} optimizer state, but the artifacts use {expected.Kind}.");
        var suffixes = OptimizerGraphBuilder.StateSuffixes(meta.Optimizer);
        if (!suffixes.SequenceEqual(_stateSuffixes))
            throw new CheckpointMismatchException($"Checkpoint '{directory}' holds optimizer states [{string.Join(", ", suffixes)}], but the artifacts' {expected.Kind} optimizer keeps [{string.Join(", ", _stateSuffixes)}] (momentum {meta.Optimizer.Momentum} vs {expected.Momentum}).");
        var byName = meta.Parameters.ToDictionary(p => p.Name, StringComparer.Ordinal);
        foreach (var slot in _store.Slots)
        {
            if (!byName.TryGetValue(slot.Name, out var p))
                throw new CheckpointMismatchException($"Checkpoint '{directory}' lacks trainable parameter '{slot.Name}'.");
            CheckTensor(directory, "parameter", slot, p, tensors);
        }
        foreach (var p in meta.Parameters)
            if (!_store.ByName.ContainsKey(p.Name))
                throw new CheckpointMismatchException($"Checkpoint '{directory}' has parameter '{p.Name}', which these artifacts do not train.");
        var statesByName = meta.OptimizerStates.ToDictionary(p => p.Name, StringComparer.Ordinal);
        foreach (var slot in _store.Slots)
            foreach (var state in slot.States)
            {
                if (!statesByName.TryGetValue(state.Name, out var s))
                    throw new CheckpointMismatchException($"Checkpoint '{directory}' lacks optimizer state '{state.Name}'.");
                CheckTensor(directory, "optimizer state", slot, s with { Name = state.Name }, tensors);
            }
    }

    private static void CheckTensor(string directory, string what, ParameterSlot slot, CheckpointTensor t, SafeTensorsFile tensors)
    {
        if (!t.Shape.SequenceEqual(slot.Shape))
            throw new CheckpointMismatchException($"Checkpoint '{directory}': {what} '{t.Name}' has shape [{string.Join(",", t.Shape)}], but the artifacts expect [{string.Join(",", slot.Shape)}].");
        var st = tensors.Get(t.Name);
        if (st.DType != ToSafe(slot.Type))
            throw new CheckpointMismatchException($"Checkpoint '{directory}': {what} '{t.Name}' is {st.DType}, but the artifacts expect {ToSafe(slot.Type)}.");
    }

    private void LoadInferenceModelWeights()
    {
        var path = Path.Combine(_directory, Manifest.Files.InferenceModel);
        var model = OnnxModelReader.Load(path);
        var initializers = model.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var slot in _store.Slots)
        {
            if (!initializers.TryGetValue(slot.Name, out var t))
                throw new InvalidArtifactsException($"{path} has no initializer '{slot.Name}' to initialise the trainable parameter of that name.");
            var count = Onnx.Tensors.TensorProtos.ElementCount(t);
            if (count != slot.ElementCount)
                throw new InvalidArtifactsException($"{path}: initializer '{slot.Name}' has {count} values, the parameter needs {slot.ElementCount}.");
            if (slot.Type == TensorElementType.Double)
                TensorStore.WriteBytes(slot.Values[_paramParity], System.Runtime.InteropServices.MemoryMarshal.AsBytes(Onnx.Tensors.TensorProtos.ToDoubleArray(t).AsSpan()));
            else
                Onnx.Tensors.TensorProtos.CopyFloats(t, slot.Values[_paramParity].GetTensorMutableDataAsSpan<float>());
        }
    }

    private void LoadInferenceModelState()
    {
        if (_stateBuffers.Count == 0) return;
        var path = Path.Combine(_directory, Manifest.Files.InferenceModel);
        var model = OnnxModelReader.Load(path);
        foreach (var s in _stateBuffers)
        {
            var t = model.Graph.Initializer.FirstOrDefault(x => x.Name == s.Name)
                ?? throw new InvalidArtifactsException($"{path} has no initializer '{s.Name}' to initialise the state tensor of that name.");
            if (s.Type == TensorElementType.Double)
                TensorStore.WriteBytes(s.Values[_stateParity], System.Runtime.InteropServices.MemoryMarshal.AsBytes(Onnx.Tensors.TensorProtos.ToDoubleArray(t).AsSpan()));
            else
                TensorStore.WriteFloats(s.Values[_stateParity], s.Type, Onnx.Tensors.TensorProtos.ToFloatArray(t));
        }
    }

    private sealed record StateBuffer(string Name, string Output, TensorElementType Type, long[] Shape, OrtValue[] Values);

    private ParameterSlot Slot(string name) => _store.ByName.TryGetValue(name, out var s) ? s
        : throw new OnnxTuneException($"'{name}' is not a trainable parameter of these artifacts (trainable: {string.Join(", ", _store.Slots.Take(10).Select(x => x.Name))}{(_store.Slots.Count > 10 ? ", ..." : "")}).");

    private static TensorElementType ToOrt(TensorSpec p) => OnnxElementTypes.Parse(p.ElementType, p.Name) switch
    {
        DataType.Float => TensorElementType.Float,
        DataType.Double => TensorElementType.Double,
        var t => throw new InvalidArtifactsException($"Trainable parameter '{p.Name}' has element type {t}; only float and double parameters train."),
    };

    private static SafeTensorDType ToSafe(TensorElementType t) => t == TensorElementType.Double ? SafeTensorDType.F64 : SafeTensorDType.F32;

    private static string TypeName(TensorElementType t) => t == TensorElementType.Double ? "double" : "float";

    private static float ReadScalar(OrtValue v, TensorElementType type) => type switch
    {
        TensorElementType.Float => v.GetTensorDataAsSpan<float>()[0],
        TensorElementType.Double => (float)v.GetTensorDataAsSpan<double>()[0],
        _ => throw new InvalidArtifactsException($"The loss output has element type {type}; float or double was expected."),
    };

    private static Array CopyOut(OrtValue v, TensorElementType type) => type switch
    {
        TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray(),
        TensorElementType.Double => v.GetTensorDataAsSpan<double>().ToArray(),
        TensorElementType.Int64 => v.GetTensorDataAsSpan<long>().ToArray(),
        TensorElementType.Int32 => v.GetTensorDataAsSpan<int>().ToArray(),
        TensorElementType.Bool => v.GetTensorDataAsSpan<bool>().ToArray(),
        _ => throw new InvalidArtifactsException($"An eval output has element type {type}, which OnnxTune does not copy out."),
    };

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
