using Google.Protobuf;
using global::Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = global::Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Onnx.Tests.TestUtilities;

/// <summary>Small hand-built models for reader/writer tests.</summary>
internal static class SampleModels
{
    /// <summary>y = Relu(x * w + b) with metadata, two opsets and a doc string.</summary>
    public static ModelProto AddRelu()
    {
        var model = new ModelProto
        {
            IrVersion = 8,
            ProducerName = "onnxtune-tests",
            ProducerVersion = "9.9",
            ModelVersion = 3,
            DocString = "sample",
            Graph = new GraphProto { Name = "sample" },
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.example", Version = 2 });
        model.MetadataProps.Add(new StringStringEntryProto { Key = "onnxtune.optimizer", Value = "adamw(lr=0.001)" });
        model.MetadataProps.Add(new StringStringEntryProto { Key = "author", Value = "tests" });
        var g = model.Graph;
        g.Input.Add(ValueInfos.Tensor("x", DataType.Float, "batch", 3L));
        g.Initializer.Add(TensorProtos.Float("w", [1f, -2f, 0.5f], 3));
        g.Initializer.Add(TensorProtos.Int64("axes", [0L, 1L], 2));
        var mul = new NodeProto { Name = "mul0", OpType = "Mul" };
        mul.Input.AddRange(["x", "w"]);
        mul.Output.Add("xw");
        var relu = new NodeProto { Name = "relu0", OpType = "Relu" };
        relu.Input.Add("xw");
        relu.Output.Add("y");
        relu.Attribute.Add(Attr.String("note", "hello"));
        relu.Attribute.Add(Attr.Ints("perm", 2, 0, 1));
        g.Node.AddRange([mul, relu]);
        g.Output.Add(ValueInfos.Tensor("y", DataType.Float, "batch", 3L));
        return model;
    }

    /// <summary>Turns <paramref name="t"/> into an external-data tensor pointing at <paramref name="location"/> (raw data dropped).</summary>
    public static void MakeExternal(TensorProto t, string location, long? offset, long? length)
    {
        t.RawData = ByteString.Empty;
        t.DataLocation = TensorProto.Types.DataLocation.External;
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        if (offset is { } o) t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = o.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        if (length is { } l) t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = l.ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }
}
