using Google.Protobuf;
using Onnx;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Transforms;

/// <summary>
/// Rewrites a float32 graph as float64 (initializers, constants, casts, inputs and outputs), so gradient checks run
/// with tight tolerances. Integer and bool tensors are untouched.
/// </summary>
public static class DoublePrecisionConverter
{
    /// <summary>Returns a float64 copy of <paramref name="model"/>.</summary>
    public static ModelProto Convert(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var copy = model.Clone();
        ConvertGraph(copy.Graph);
        return copy;
    }

    private static void ConvertGraph(GraphProto g)
    {
        for (var i = 0; i < g.Initializer.Count; i++) g.Initializer[i] = ConvertTensor(g.Initializer[i]);
        foreach (var v in g.Input.Concat(g.Output).Concat(g.ValueInfo))
            if (v.Type?.TensorType is { } tt && tt.ElemType == (int)DataType.Float) tt.ElemType = (int)DataType.Double;
        foreach (var n in g.Node)
        {
            foreach (var a in n.Attribute)
            {
                if (a.T is not null) a.T = ConvertTensor(a.T);
                if (a.G is not null) ConvertGraph(a.G);
                if (n.OpType is "Cast" or "RandomNormal" or "RandomUniform" or "RandomNormalLike" or "RandomUniformLike" or "EyeLike"
                    && a.Name is "to" or "dtype" && a.I == (long)DataType.Float)
                    a.I = (long)DataType.Double;
            }
            if (n.OpType == "Constant" && n.Attribute.FirstOrDefault(a => a.Name is "value_float") is { } vf)
            {
                n.Attribute.Remove(vf);
                n.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Double("v", [vf.F]) });
            }
            if (n.OpType == "Constant" && n.Attribute.FirstOrDefault(a => a.Name is "value_floats") is { } vfs)
            {
                n.Attribute.Remove(vfs);
                n.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Double("v", vfs.Floats.Select(f => (double)f).ToArray(), vfs.Floats.Count) });
            }
        }
    }

    private static TensorProto ConvertTensor(TensorProto t)
    {
        if (t.DataType != (int)DataType.Float) return t;
        var values = TensorProtos.ToDoubleArray(t);
        var d = TensorProtos.Double(t.Name, values, t.Dims.ToArray());
        d.DocString = t.DocString;
        return d;
    }
}
