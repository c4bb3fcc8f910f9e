using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Onnx.Models;

/// <summary>
/// Builds a multi-layer perceptron as an inference ONNX model (Gemm + activation per layer, symbolic batch),
/// initialised like PyTorch's <c>nn.Linear</c>: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
/// Weights are stored [out, in] and used with transB=1, as torch.onnx exports Linear layers.
/// </summary>
public sealed class MlpModelBuilder
{
    private readonly List<int> _sizes;

    /// <summary>Starts an MLP with <paramref name="inputSize"/> features.</summary>
    public MlpModelBuilder(int inputSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inputSize, 1);
        _sizes = [inputSize];
    }

    /// <summary>Activation between layers: Relu (default), Tanh, Sigmoid or Gelu-free standard ops.</summary>
    public string Activation { get; init; } = "Relu";

    /// <summary>Name of the input tensor.</summary>
    public string InputName { get; init; } = "features";

    /// <summary>Name of the output tensor.</summary>
    public string OutputName { get; init; } = "logits";

    /// <summary>Opset of the model.</summary>
    public long Opset { get; init; } = 17;

    /// <summary>Appends a linear layer of <paramref name="size"/> outputs.</summary>
    public MlpModelBuilder Layer(int size)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        _sizes.Add(size);
        return this;
    }

    /// <summary>Builds the model with weights drawn from <paramref name="seed"/>.</summary>
    public ModelProto Build(int seed = 0)
    {
        if (_sizes.Count < 2) throw new InvalidOperationException("Add at least one layer before Build().");
        var rng = new Random(seed);
        var model = new ModelProto { IrVersion = 8, ProducerName = "OnnxTune", ProducerVersion = "0.1", Graph = new GraphProto { Name = "mlp" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        var editor = new GraphEditor(model.Graph);
        editor.Reserve(InputName);
        editor.AddInput(ValueInfos.Tensor(InputName, DataType.Float, "batch", (long)_sizes[0]));
        var x = InputName;
        for (var l = 1; l < _sizes.Count; l++)
        {
            int fanIn = _sizes[l - 1], fanOut = _sizes[l];
            var bound = 1.0 / Math.Sqrt(fanIn);
            var w = new float[fanOut * fanIn];
            for (var i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            var b = new float[fanOut];
            for (var i = 0; i < b.Length; i++) b[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            var wName = editor.AddInitializer(TensorProtos.Float($"fc{l}.weight", w, fanOut, fanIn), makeUnique: false);
            var bName = editor.AddInitializer(TensorProtos.Float($"fc{l}.bias", b, fanOut), makeUnique: false);
            var last = l == _sizes.Count - 1;
            var y = last ? editor.Reserve(OutputName) : editor.UniqueName($"fc{l}_out");
            editor.AddNode("Gemm", [x, wName, bName], [y], Attr.Int("transB", 1));
            x = last ? y : editor.Add(Activation, [y], $"act{l}_out");
        }
        model.Graph.Output.Add(ValueInfos.Tensor(OutputName, DataType.Float, "batch", (long)_sizes[^1]));
        return model;
    }
}
