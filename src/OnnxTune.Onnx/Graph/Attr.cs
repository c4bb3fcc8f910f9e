using Google.Protobuf;
using Onnx;
using AttrType = Onnx.AttributeProto.Types.AttributeType;

namespace OnnxTune.Onnx.Graph;

/// <summary>Small factory for node attributes.</summary>
public static class Attr
{
    /// <summary>An INT attribute.</summary>
    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttrType.Int, I = value };

    /// <summary>A FLOAT attribute.</summary>
    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttrType.Float, F = value };

    /// <summary>A STRING attribute.</summary>
    public static AttributeProto String(string name, string value) =>
        new() { Name = name, Type = AttrType.String, S = ByteString.CopyFromUtf8(value) };

    /// <summary>An INTS attribute.</summary>
    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttrType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>A FLOATS attribute.</summary>
    public static AttributeProto Floats(string name, params float[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttrType.Floats };
        a.Floats.AddRange(values);
        return a;
    }

    /// <summary>A TENSOR attribute.</summary>
    public static AttributeProto Tensor(string name, TensorProto value) => new() { Name = name, Type = AttrType.Tensor, T = value };
}

/// <summary>Reads attributes of a node with the defaults the ONNX spec gives.</summary>
public static class NodeAttributes
{
    /// <summary>The attribute, or null.</summary>
    public static AttributeProto? Find(this NodeProto node, string name)
    {
        foreach (var a in node.Attribute)
            if (a.Name == name) return a;
        return null;
    }

    /// <summary>An INT attribute or its default.</summary>
    public static long GetInt(this NodeProto node, string name, long defaultValue) => node.Find(name) is { } a ? a.I : defaultValue;

    /// <summary>A FLOAT attribute or its default.</summary>
    public static float GetFloat(this NodeProto node, string name, float defaultValue) => node.Find(name) is { } a ? a.F : defaultValue;

    /// <summary>A STRING attribute or its default.</summary>
    public static string GetString(this NodeProto node, string name, string defaultValue) =>
        node.Find(name) is { } a ? a.S.ToStringUtf8() : defaultValue;

    /// <summary>An INTS attribute, or null when absent.</summary>
    public static long[]? GetInts(this NodeProto node, string name) => node.Find(name) is { } a ? a.Ints.ToArray() : null;

    /// <summary>A short description for error messages: <c>MatMul node 'name'</c>.</summary>
    public static string Describe(this NodeProto node) =>
        $"{(string.IsNullOrEmpty(node.Domain) ? "" : node.Domain + ".")}{node.OpType} node '{(string.IsNullOrEmpty(node.Name) ? "(unnamed, output " + (node.Output.Count > 0 ? node.Output[0] : "?") + ")" : node.Name)}'";
}
