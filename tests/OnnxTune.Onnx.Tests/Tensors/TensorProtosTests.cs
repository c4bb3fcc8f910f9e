using System.Runtime.InteropServices;
using Google.Protobuf;
using global::Onnx;
using OnnxTune.Onnx.Tensors;
using DataType = global::Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Onnx.Tests.Tensors;

public sealed class TensorProtosTests
{
    [Fact]
    public void Float_writes_little_endian_raw_data_type_and_dims()
    {
        var t = TensorProtos.Float("w", [1f, -2.5f, 3f, 0.125f, 5f, 6f], 2, 3);

        Assert.Equal("w", t.Name);
        Assert.Equal((int)DataType.Float, t.DataType);
        Assert.Equal([2L, 3L], t.Dims);
        Assert.Empty(t.FloatData);
        Assert.Equal(24, t.RawData.Length);
        Assert.Equal(new byte[] { 0x00, 0x00, 0x20, 0xC0 }, t.RawData.Span.Slice(4, 4).ToArray()); // -2.5f
        Assert.Equal([1f, -2.5f, 3f, 0.125f, 5f, 6f], TensorProtos.ToFloatArray(t));
        Assert.Equal(6L, TensorProtos.ElementCount(t));
    }

    [Fact]
    public void Double_and_Int64_and_Bool_round_trip()
    {
        var d = TensorProtos.Double("d", [Math.PI, -1e-300], 2);
        var i = TensorProtos.Int64("i", [long.MinValue, 0, long.MaxValue], 3, 1);
        var b = TensorProtos.Bool("b", [true, false, true], 3);

        Assert.Equal((int)DataType.Double, d.DataType);
        Assert.Equal([Math.PI, -1e-300], TensorProtos.ToDoubleArray(d));
        Assert.Equal((int)DataType.Int64, i.DataType);
        Assert.Equal([3L, 1L], i.Dims);
        Assert.Equal([long.MinValue, 0L, long.MaxValue], TensorProtos.ToInt64Array(i));
        Assert.Equal((int)DataType.Bool, b.DataType);
        Assert.Equal(new byte[] { 1, 0, 1 }, b.RawData.ToByteArray());
    }

    [Fact]
    public void Scalar_has_no_dims_and_one_element()
    {
        var t = TensorProtos.Float("lr", [0.001f]);

        Assert.Empty(t.Dims);
        Assert.Equal(1L, TensorProtos.ElementCount(t));
        Assert.Equal([0.001f], TensorProtos.ToFloatArray(t));
    }

    [Fact]
    public void Empty_tensor_has_zero_elements()
    {
        var t = TensorProtos.Float("e", [], 0, 4);

        Assert.Equal(0L, TensorProtos.ElementCount(t));
        Assert.Empty(TensorProtos.ToFloatArray(t));
    }

    [Fact]
    public void Value_count_not_matching_shape_throws_naming_tensor_and_shape()
    {
        var e = Assert.Throws<ArgumentException>(() => TensorProtos.Float("w", [1f, 2f, 3f], 2, 2));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("[2,2]", e.Message);
    }

    [Fact]
    public void Typed_fields_are_read_when_there_is_no_raw_data()
    {
        var f = new TensorProto { Name = "f", DataType = (int)DataType.Float };
        f.Dims.Add(3);
        f.FloatData.AddRange([1f, 2f, 3f]);
        var d = new TensorProto { Name = "d", DataType = (int)DataType.Double };
        d.Dims.Add(2);
        d.DoubleData.AddRange([0.1, 0.2]);
        var i64 = new TensorProto { Name = "i", DataType = (int)DataType.Int64 };
        i64.Dims.AddRange([2, 1]);
        i64.Int64Data.AddRange([-7, 9]);
        var i32 = new TensorProto { Name = "j", DataType = (int)DataType.Int32 };
        i32.Dims.Add(2);
        i32.Int32Data.AddRange([-3, 4]);

        Assert.Equal([1f, 2f, 3f], TensorProtos.ToFloatArray(f));
        Assert.Equal([1.0, 2.0, 3.0], TensorProtos.ToDoubleArray(f));
        Assert.Equal([0.1, 0.2], TensorProtos.ToDoubleArray(d));
        Assert.Equal([0.1f, 0.2f], TensorProtos.ToFloatArray(d));
        Assert.Equal([-7L, 9L], TensorProtos.ToInt64Array(i64));
        Assert.Equal([-3L, 4L], TensorProtos.ToInt64Array(i32));
    }

    [Fact]
    public void Int32_raw_data_is_widened()
    {
        var t = new TensorProto { Name = "j", DataType = (int)DataType.Int32, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes<int>([int.MinValue, 5]).ToArray()) };
        t.Dims.Add(2);

        Assert.Equal([(long)int.MinValue, 5L], TensorProtos.ToInt64Array(t));
    }

    [Fact]
    public void Cross_precision_conversions_round_to_float()
    {
        var d = TensorProtos.Double("d", [1.0 / 3.0], 1);
        var f = TensorProtos.Float("f", [1f / 3f], 1);

        Assert.Equal([1f / 3f], TensorProtos.ToFloatArray(d));
        Assert.Equal([(double)(1f / 3f)], TensorProtos.ToDoubleArray(f));
    }

    [Fact]
    public void Raw_data_of_the_wrong_size_throws_format_exception()
    {
        var t = TensorProtos.Float("w", [1f, 2f, 3f], 3);
        t.Dims[0] = 4;

        var e = Assert.Throws<OnnxModelFormatException>(() => TensorProtos.ToFloatArray(t));

        Assert.Contains("'w'", e.Message);
        Assert.Contains("12 bytes", e.Message);
        Assert.Contains("needs 16", e.Message);
    }

    [Fact]
    public void Typed_field_with_the_wrong_count_throws_format_exception()
    {
        var t = new TensorProto { Name = "ids", DataType = (int)DataType.Int64 };
        t.Dims.Add(3);
        t.Int64Data.AddRange([1, 2]);

        var e = Assert.Throws<OnnxModelFormatException>(() => TensorProtos.ToInt64Array(t));

        Assert.Contains("'ids'", e.Message);
        Assert.Contains("holds 2 values", e.Message);
    }

    [Fact]
    public void Wrong_element_types_throw_typed_errors_naming_tensor_and_type()
    {
        var ints = TensorProtos.Int64("ids", [1, 2], 2);
        var floats = TensorProtos.Float("w", [1f], 1);
        var bools = TensorProtos.Bool("mask", [true], 1);

        var e1 = Assert.Throws<OnnxTuneException>(() => TensorProtos.ToFloatArray(ints));
        var e2 = Assert.Throws<OnnxTuneException>(() => TensorProtos.ToDoubleArray(bools));
        var e3 = Assert.Throws<OnnxTuneException>(() => TensorProtos.ToInt64Array(floats));

        Assert.Contains("'ids'", e1.Message);
        Assert.Contains("Int64", e1.Message);
        Assert.Contains("'mask'", e2.Message);
        Assert.Contains("Bool", e2.Message);
        Assert.Contains("'w'", e3.Message);
        Assert.Contains("integer", e3.Message);
    }

    [Fact]
    public void ToFloatArray_reads_float16_as_documented()
    {
        var halves = new Half[] { (Half)1.5f, (Half)(-2f) };
        var t = new TensorProto { Name = "h", DataType = (int)DataType.Float16, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes<Half>(halves).ToArray()) };
        t.Dims.Add(2);

        Assert.Equal([1.5f, -2f], TensorProtos.ToFloatArray(t));
    }

    [Fact]
    public void ToFloatArray_reads_float16_raw_data_as_little_endian_bytes()
    {
        // 0x3E00 = 1.5, 0xC000 = -2, 0x7C00 = +inf, 0x0001 = smallest subnormal (2^-24).
        var t = new TensorProto { Name = "h", DataType = (int)DataType.Float16, RawData = ByteString.CopyFrom(0x00, 0x3E, 0x00, 0xC0, 0x00, 0x7C, 0x01, 0x00) };
        t.Dims.Add(4);

        Assert.Equal([1.5f, -2f, float.PositiveInfinity, MathF.Pow(2, -24)], TensorProtos.ToFloatArray(t));
    }

    [Fact]
    public void ToFloatArray_reads_float16_bit_patterns_from_int32_data()
    {
        var t = new TensorProto { Name = "h", DataType = (int)DataType.Float16 };
        t.Dims.AddRange([2, 1]);
        t.Int32Data.AddRange([0x3E00, 0xC000]);

        Assert.Equal([1.5f, -2f], TensorProtos.ToFloatArray(t));
        Assert.Equal([1.5, -2.0], TensorProtos.ToDoubleArray(t));
    }

    [Fact]
    public void ToFloatArray_reads_bfloat16_from_raw_data_and_int32_data()
    {
        // bfloat16 is the upper half of a float32: 0x3FC0 = 1.5, 0xC000 = -2, 0x3F81 = 1 + 2^-7.
        var raw = new TensorProto { Name = "b", DataType = (int)DataType.Bfloat16, RawData = ByteString.CopyFrom(0xC0, 0x3F, 0x00, 0xC0, 0x81, 0x3F) };
        raw.Dims.Add(3);
        var ints = new TensorProto { Name = "b", DataType = (int)DataType.Bfloat16 };
        ints.Dims.Add(3);
        ints.Int32Data.AddRange([0x3FC0, 0xC000, 0x3F81]);

        float[] expected = [1.5f, -2f, 1f + 1f / 128];
        Assert.Equal(expected, TensorProtos.ToFloatArray(raw));
        Assert.Equal(expected, TensorProtos.ToFloatArray(ints));
        Assert.Equal(expected.Select(f => (double)f), TensorProtos.ToDoubleArray(raw));
    }

    [Fact]
    public void Float16_with_wrong_raw_size_or_value_count_names_the_tensor()
    {
        var raw = new TensorProto { Name = "h", DataType = (int)DataType.Float16, RawData = ByteString.CopyFrom(0x00, 0x3E, 0x00) };
        raw.Dims.Add(2);
        var ints = new TensorProto { Name = "h", DataType = (int)DataType.Float16 };
        ints.Dims.Add(2);
        ints.Int32Data.Add(0x3E00);

        var e1 = Assert.Throws<OnnxModelFormatException>(() => TensorProtos.ToFloatArray(raw));
        var e2 = Assert.Throws<OnnxModelFormatException>(() => TensorProtos.ToFloatArray(ints));

        Assert.Contains("'h'", e1.Message);
        Assert.Contains("3 bytes", e1.Message);
        Assert.Contains("'h'", e2.Message);
        Assert.Contains("holds 1 values", e2.Message);
    }

    [Theory]
    [InlineData(DataType.Float, true, 4)]
    [InlineData(DataType.Double, true, 8)]
    [InlineData(DataType.Float16, true, 2)]
    [InlineData(DataType.Bfloat16, true, 2)]
    [InlineData(DataType.Int64, false, 8)]
    [InlineData(DataType.Int32, false, 4)]
    [InlineData(DataType.Int8, false, 1)]
    [InlineData(DataType.Uint16, false, 2)]
    [InlineData(DataType.Bool, false, 1)]
    [InlineData(DataType.String, false, 0)]
    [InlineData(DataType.Undefined, false, 0)]
    public void IsFloating_and_ElementSize(DataType type, bool floating, int size)
    {
        Assert.Equal(floating, TensorProtos.IsFloating(type));
        Assert.Equal(size, TensorProtos.ElementSize(type));
    }
}
