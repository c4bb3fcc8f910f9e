using global::Onnx;
using OnnxTune.Onnx.Graph;
using DataType = global::Onnx.TensorProto.Types.DataType;
using DimCase = global::Onnx.TensorShapeProto.Types.Dimension.ValueOneofCase;

namespace OnnxTune.Onnx.Tests.Graph;

public sealed class ValueInfosTests
{
    [Fact]
    public void Mixed_symbolic_static_and_unknown_dims_are_encoded_and_read_back()
    {
        var v = ValueInfos.Tensor("ids", DataType.Int64, "batch", 128L, 4, null, "seq");

        Assert.Equal("ids", v.Name);
        Assert.Equal(DataType.Int64, ValueInfos.ElemType(v));
        var dims = v.Type.TensorType.Shape.Dim;
        Assert.Equal([DimCase.DimParam, DimCase.DimValue, DimCase.DimValue, DimCase.None, DimCase.DimParam], dims.Select(d => d.ValueCase));
        Assert.Equal("batch", dims[0].DimParam);
        Assert.Equal("seq", dims[4].DimParam);
        Assert.Equal(128L, dims[1].DimValue);
        Assert.Equal(4L, dims[2].DimValue);
        Assert.Equal([null, 128L, 4L, null, null], ValueInfos.Dims(v));
    }

    [Fact]
    public void Static_dims_only()
    {
        var v = ValueInfos.Tensor("w", DataType.Float, 3L, 5L);

        Assert.Equal(DataType.Float, ValueInfos.ElemType(v));
        Assert.Equal([3L, 5L], ValueInfos.Dims(v));
    }

    [Fact]
    public void No_dims_is_a_scalar_and_a_null_array_is_unknown_rank()
    {
        var scalar = ValueInfos.Tensor("s", DataType.Float);
        var unknown = ValueInfos.Tensor("u", DataType.Double, null);

        Assert.NotNull(scalar.Type.TensorType.Shape);
        Assert.Equal([], ValueInfos.Dims(scalar)!);
        Assert.Null(unknown.Type.TensorType.Shape);
        Assert.Null(ValueInfos.Dims(unknown));
        Assert.Equal(DataType.Double, ValueInfos.ElemType(unknown));
    }

    [Fact]
    public void Value_info_without_tensor_type_is_undefined_with_unknown_rank()
    {
        var none = new ValueInfoProto { Name = "x" };
        var seq = new ValueInfoProto { Name = "s", Type = new TypeProto { SequenceType = new TypeProto.Types.Sequence() } };

        Assert.Equal(DataType.Undefined, ValueInfos.ElemType(none));
        Assert.Equal(DataType.Undefined, ValueInfos.ElemType(seq));
        Assert.Null(ValueInfos.Dims(none));
        Assert.Null(ValueInfos.Dims(seq));
    }
}
