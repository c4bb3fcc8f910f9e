using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Optimizers;

/// <summary>
/// Node-emitting vocabulary shared by the optimizer blocks: scalar constants per element type and the
/// per-update scalars (learning rate, step) computed once and cast to each parameter type.
/// </summary>
internal sealed class OptimizerGraphContext
{
    private readonly Dictionary<(string Key, DataType Type), string> _cache = [];

    public OptimizerGraphContext(GraphEditor editor, string learningRate, string step)
    {
        Editor = editor;
        LearningRateInput = learningRate;
        StepInput = step;
    }

    public GraphEditor Editor { get; }

    /// <summary>The float <c>learning_rate</c> input.</summary>
    public string LearningRateInput { get; }

    /// <summary>The int64 <c>step</c> input.</summary>
    public string StepInput { get; }

    /// <summary>Adds one node; <paramref name="output"/> names its output exactly, otherwise a unique name is made.</summary>
    public string Op(string opType, string[] inputs, string? output = null, params AttributeProto[] attributes)
    {
        // A named output is a graph output the builder reserved when it declared it.
        var name = output ?? Editor.UniqueName(opType.ToLowerInvariant());
        Editor.AddNode(opType, inputs, [name], attributes);
        return name;
    }

    /// <summary>A scalar constant of the given type.</summary>
    public string Constant(double value, DataType type) => Cached($"const:{value:R}", type, () =>
        type switch
        {
            DataType.Float => Editor.AddInitializer(TensorProtos.Float("c", [(float)value])),
            DataType.Double => Editor.AddInitializer(TensorProtos.Double("c", [value])),
            DataType.Int64 => Editor.AddInitializer(TensorProtos.Int64("c", [(long)value])),
            _ => throw new OnnxTuneException($"Optimizer graphs support float and double parameters, not {type}."),
        });

    /// <summary>
    /// A scalar computed once in float64 (as Python computes PyTorch's hyper-parameter arithmetic) and cast to
    /// <paramref name="type"/>.
    /// </summary>
    public string DoubleScalar(string key, DataType type, Func<string> computeInDouble)
    {
        var d = Cached(key, DataType.Double, computeInDouble);
        return type == DataType.Double ? d : Cached(key, type, () => Cast(d, type));
    }

    /// <summary>The learning rate as <paramref name="type"/>.</summary>
    public string LearningRate(DataType type) =>
        type == DataType.Float ? LearningRateInput : Cached("lr", type, () => Cast(LearningRateInput, type));

    /// <summary>The learning rate as float64.</summary>
    public string LearningRateDouble => LearningRate(DataType.Double);

    /// <summary>The step count as float64.</summary>
    public string StepDouble => Cached("step", DataType.Double, () => Cast(StepInput, DataType.Double));

    /// <summary>True on the first update (<c>step == 1</c>).</summary>
    public string IsFirstStep => Cached("first", DataType.Bool, () => Op("Equal", [StepInput, Constant(1, DataType.Int64)]));

    public string Cast(string value, DataType to) => Op("Cast", [value], null, Attr.Int("to", (long)to));

    private string Cached(string key, DataType type, Func<string> make)
    {
        if (!_cache.TryGetValue((key, type), out var name))
            _cache[(key, type)] = name = make();
        return name;
    }
}
