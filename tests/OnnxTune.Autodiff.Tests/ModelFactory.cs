using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests;

/// <summary>Builds tiny single-purpose models for gradient checks.</summary>
internal sealed class ModelFactory
{
    private readonly ModelProto _model;
    private readonly Random _rng;

    public ModelFactory(long opset = 17, int seed = 1)
    {
        _rng = new Random(seed);
        _model = new ModelProto { IrVersion = 8, ProducerName = "OnnxTune.Tests", Graph = new GraphProto { Name = "test" } };
        _model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        Editor = new GraphEditor(_model.Graph);
    }

    public GraphEditor Editor { get; }

    /// <summary>Data input with dims (long fixed, string symbolic).</summary>
    public string Input(string name, DataType type, params object[] dims)
    {
        Editor.Reserve(name);
        Editor.AddInput(ValueInfos.Tensor(name, type, dims));
        return name;
    }

    /// <summary>A random float parameter (uniform in [lo, hi]).</summary>
    public string Param(string name, long[] dims, double lo = -1, double hi = 1)
    {
        var n = (int)dims.Aggregate(1L, (a, b) => a * b);
        var data = Enumerable.Range(0, n).Select(_ => (float)(lo + (hi - lo) * _rng.NextDouble())).ToArray();
        Editor.AddInitializer(TensorProtos.Float(name, data, dims), makeUnique: false);
        return name;
    }

    public string Const(string name, long[] values) => Editor.AddInitializer(TensorProtos.Int64(name, values, values.Length), makeUnique: false);

    public string ConstFloat(string name, float[] values, params long[] dims) => Editor.AddInitializer(TensorProtos.Float(name, values, dims), makeUnique: false);

    public string Node(string op, string[] inputs, params AttributeProto[] attrs) => Editor.Add(op, inputs, op.ToLowerInvariant(), attrs);

    public ModelProto Output(string name, params object[] dims)
    {
        _model.Graph.Output.Add(ValueInfos.Tensor(name, DataType.Float, dims.Length == 0 ? null : dims));
        return _model;
    }
}

internal static class GradientAssert
{
    /// <summary>Checks every parameter of the model against finite differences; prints the seed on failure.</summary>
    public static GradientCheckReport Passes(ModelProto model, GradientCheckOptions? options = null, bool requireDouble = true)
    {
        options ??= new GradientCheckOptions();
        var report = GradientChecker.Check(model, options);
        var detail = string.Join("\n", report.Parameters.Select(p => $"  {p.Name}: max rel {p.MaxRelativeError:E2}, max abs {p.MaxAbsoluteError:E2}, {p.ElementsChecked} elements, {(p.Passed ? "ok" : "FAIL")}"));
        Assert.True(report.Passed, $"Gradient check failed (seed {report.Seed}, {(report.DoublePrecision ? "float64" : "float32")}):\n{detail}");
        if (requireDouble) Assert.True(report.DoublePrecision, "Expected the check to run in float64.\n" + detail);
        return report;
    }
}
