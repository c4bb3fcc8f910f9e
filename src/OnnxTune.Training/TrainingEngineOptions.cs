using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxTune.Training.Sessions;

namespace OnnxTune.Training;

/// <summary>How <see cref="TrainingEngine.OptimizerStep"/> applies the update.</summary>
public enum OptimizerExecution
{
    /// <summary>
    /// <see cref="Fused"/> on the CPU when the artifacts' optimizer graph is OnnxTune's own (AdamW or SGD, recognised by
    /// its signature metadata); <see cref="Graph"/> otherwise (custom optimizer graphs, CUDA).
    /// </summary>
    Auto,
    /// <summary>Run <c>optimizer_model.onnx</c> in ONNX Runtime (portable; one pass over memory per operator).</summary>
    Graph,
    /// <summary>
    /// OnnxTune's fused CPU kernel: the same operations as the optimizer graph in one pass over the parameters' buffers.
    /// Fails at open when the optimizer graph is not OnnxTune's or the device is not the CPU.
    /// </summary>
    Fused,
}

/// <summary>How ONNX Runtime's intra-op and inter-op pool threads wait for work (<see cref="TrainingEngineOptions.Spinning"/>).</summary>
public enum ThreadSpinning
{
    /// <summary>Threads sleep when idle; every parallel operator pays a wake-up, no core is burnt while waiting.</summary>
    Never,
    /// <summary>Threads spin while a run is in progress and stop as soon as it returns (<c>session.force_spinning_stop</c>): fast hand-offs inside a step, nothing burnt between steps.</summary>
    DuringRuns,
    /// <summary>ONNX Runtime's own default: threads keep spinning for a while after each run too.</summary>
    Always,
}

/// <summary>Options for <see cref="TrainingEngine.Open"/>.</summary>
public sealed class TrainingEngineOptions
{
    /// <summary>Gets or sets the threads used inside one operator.</summary>
    /// <value>The default value is 0 (ONNX Runtime chooses).</value>
    public int IntraOpThreads { get; set; }

    /// <summary>Gets or sets the threads used across independent operators.</summary>
    /// <value>The default value is 0 (ONNX Runtime chooses).</value>
    public int InterOpThreads { get; set; }

    /// <summary>
    /// Gets or sets how ONNX Runtime's pool threads wait for work. Spinning shortens the hand-off between operators
    /// but burns cores the app (and serving) may need: on an idle 2-core machine <see cref="ThreadSpinning.DuringRuns"/>
    /// made W2/W3 training steps 5–8% faster than <see cref="ThreadSpinning.Never"/>; with two CPU-bound neighbours it
    /// made them 8% slower, and always-on spinning up to 2× slower (benchmarks/README.md).
    /// </summary>
    /// <value>The default value is <see cref="ThreadSpinning.Never"/>.</value>
    public ThreadSpinning Spinning { get; set; } = ThreadSpinning.Never;

    /// <summary>
    /// Gets or sets whether ONNX Runtime plans the sessions' memory per input shape (its memory pattern). Off by
    /// default, because on-device memory is the scarcer resource: on fixed-shape batches the plan saved 2–8% of step
    /// time (W2, W3) for 110–115 MB more peak RSS (W3: 602 against 492 MB), and with batches of several shapes
    /// (length-bucketed text) each shape keeps its own blocks (about 100 MB more on W4 at the same step time).
    /// </summary>
    /// <value>The default value is false.</value>
    public bool MemoryPattern { get; set; }

    /// <summary>
    /// Gets or sets whether opening the session ends with one full garbage collection when it allocated more than
    /// 32 MB of transient managed memory (the parsed models and their weights). Training allocates almost nothing
    /// per step, so without it that memory stays resident for the whole run: on W3 it lowered peak RSS by about 70 MB.
    /// Turn it off when the process must not see a collection pause at open.
    /// </summary>
    /// <value>The default value is true.</value>
    public bool ReleaseLoadMemory { get; set; } = true;

    /// <summary>Gets or sets the execution provider.</summary>
    /// <value>The default value is <see cref="ExecutionProvider.Cpu"/>.</value>
    public ExecutionProvider ExecutionProvider { get; set; } = ExecutionProvider.Cpu;

    /// <summary>Gets or sets how the optimizer update runs.</summary>
    /// <value>The default value is <see cref="OptimizerExecution.Auto"/>.</value>
    public OptimizerExecution OptimizerExecution { get; set; } = OptimizerExecution.Auto;

    /// <summary>Gets or sets the CUDA device ordinal (with <see cref="ExecutionProvider.Cuda"/>).</summary>
    /// <value>The default value is 0.</value>
    public int CudaDeviceId { get; set; }

    /// <summary>
    /// Gets or sets a checkpoint folder to start from. When null, the artifacts' own <c>checkpoint/</c> is used if
    /// present, otherwise the initializer values of <c>inference_model.onnx</c>.
    /// </summary>
    /// <value>The default value is null.</value>
    public string? CheckpointDirectory { get; set; }

    /// <summary>
    /// Gets or sets a seed for the random operators of the training and eval graphs (Dropout, RandomUniform,
    /// RandomNormal, Bernoulli, Multinomial): each gets <c>seed + node index</c>, so runs are repeatable.
    /// </summary>
    /// <value>The default value is null (ONNX Runtime's own random seeding).</value>
    public int? Seed { get; set; }

    /// <summary>
    /// Gets or sets per-parameter factors on the learning rate, like PyTorch parameter groups: each trainable
    /// parameter whose name matches a key (a name, or a glob with <c>*</c> and <c>?</c>; the longest matching pattern
    /// wins) is updated with <c>LearningRate × factor</c>. A typical use is a small factor on encoder layers and 1 on a
    /// new head. Needs the fused CPU optimizer (<see cref="OptimizerExecution.Auto"/> on the CPU); the optimizer graph
    /// takes one learning rate.
    /// </summary>
    /// <value>The default value is null: one learning rate for all parameters.</value>
    public IReadOnlyDictionary<string, double>? LearningRateScales { get; set; }

    /// <summary>Re-binds long-lived inputs before every run (always on for non-CPU devices; settable for tests).</summary>
    internal bool RebindInputsEachRun { get; set; }

    /// <summary>Adjusts the ONNX Runtime options of all three sessions after OnnxTune set them (benchmark experiments).</summary>
    internal Action<SessionOptions>? ConfigureSessionOptions { get; set; }
}

/// <summary>Result of <see cref="TrainingEngine.EvalStep"/>.</summary>
/// <param name="Loss">The batch loss.</param>
/// <param name="Outputs">The model outputs by name, copied out of ONNX Runtime.</param>
public sealed record EvalResult(float Loss, IReadOnlyDictionary<string, EvalOutput> Outputs);

/// <summary>One model output of an eval run.</summary>
/// <param name="ElementType">Element type.</param>
/// <param name="Shape">Shape.</param>
/// <param name="Data">A <c>float[]</c>, <c>double[]</c>, <c>long[]</c>, <c>int[]</c> or <c>bool[]</c> copy.</param>
public sealed record EvalOutput(TensorElementType ElementType, long[] Shape, Array Data)
{
    /// <summary>The data as float32 (for float or double outputs).</summary>
    public float[] AsFloats() => Data switch
    {
        float[] f => f,
        double[] d => Array.ConvertAll(d, x => (float)x),
        _ => throw new InvalidOperationException($"The output holds {ElementType} values, not floating point."),
    };
}
