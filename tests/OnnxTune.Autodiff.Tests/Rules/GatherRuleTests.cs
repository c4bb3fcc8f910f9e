using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.Graph;
using OnnxTune.Training.GradientChecking;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Tests.Rules;

public class GatherRuleTests
{
    [Theory]
    [InlineData(13)]
    [InlineData(14)]
    [InlineData(17)]
    public void Embedding_rows_with_repeated_ids_accumulate(int opset)
    {
        // Repeated and negative ids: rows gathered twice must get the sum of both gradients.
        var f = new ModelFactory(opset: opset);
        var ids = f.Input("ids", DataType.Int64, "batch", "seq");
        var table = f.Param("table", [5, 3]);
        var y = f.Node("Gather", [table, ids]);
        var model = f.Output(y, "batch", "seq", 3L);
        var options = new GradientCheckOptions
        {
            Inputs = new Dictionary<string, (Array, long[])> { ["ids"] = (new long[] { 1, 3, 1, -1, 0, 1 }, [2, 3]) },
            MaxElementsPerParameter = 15,
        };
        GradientAssert.Passes(model, options);
        var graphs = TrainingGraphBuilder.Build(model, new ParameterSelection(), new LossSpec { Kind = LossKind.Mse }, gradientAccumulation: false);
        Assert.Equal(opset < 16 ? 16 : opset, graphs.Training.OpsetImport.Single(o => o.Domain == "").Version);
        Assert.Equal(opset, graphs.Eval.OpsetImport.Single(o => o.Domain == "").Version);
    }

    [Theory]
    [InlineData(0, new long[] { 2 }, new long[] { 4, 3, 2 })]
    [InlineData(1, new long[] { 2, 2 }, new long[] { 4, 3, 2 })]
    [InlineData(2, new long[] { 3 }, new long[] { 4, 3, 2 })]
    [InlineData(-2, new long[] { }, new long[] { 4, 3, 2 })]
    [InlineData(-1, new long[] { 2, 1 }, new long[] { 4, 3 })]
    public void Gather_any_axis_and_index_rank(int axis, long[] indexShape, long[] dataShape)
    {
        var f = new ModelFactory();
        var w = f.Param("w", dataShape);
        var rank = dataShape.Length;
        var size = dataShape[axis < 0 ? axis + rank : axis];
        var n = (int)indexShape.Aggregate(1L, (a, b) => a * b);
        var values = Enumerable.Range(0, n).Select(i => (long)((i * 2 + 1) % size) - (i % 2 == 0 ? 0 : size)).ToArray(); // mixes negative ids
        if (n > 1) values[^1] = values[0]; // one repeat
        var idx = f.Editor.AddInitializer(OnnxTune.Onnx.Tensors.TensorProtos.Int64("idx", values, indexShape), makeUnique: false);
        var y = f.Node("Gather", [w, idx], Attr.Int("axis", axis));
        GradientAssert.Passes(f.Output(y));
    }

    [Fact]
    public void Gather_with_int32_indices()
    {
        var f = new ModelFactory();
        var w = f.Param("w", [4, 2]);
        var idx = f.Editor.AddInitializer(new global::Onnx.TensorProto { Name = "idx", DataType = (int)DataType.Int32, Dims = { 3 }, Int32Data = { 3, 0, 3 } }, makeUnique: false);
        GradientAssert.Passes(f.Output(f.Node("Gather", [w, idx])));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(-1)]
    public void GatherElements_any_axis(int axis)
    {
        var f = new ModelFactory();
        var w = f.Param("w", [3, 4]);
        var idx = f.Editor.AddInitializer(OnnxTune.Onnx.Tensors.TensorProtos.Int64("idx", [0, 2, -1, 1, 2, 2], 2, 3), makeUnique: false);
        GradientAssert.Passes(f.Output(f.Node("GatherElements", [w, idx], Attr.Int("axis", axis))));
    }
}
