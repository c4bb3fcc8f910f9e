using global::Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using AttrType = global::Onnx.AttributeProto.Types.AttributeType;

namespace OnnxTune.Onnx.Tests.Graph;

public sealed class AttributeTests
{
    private static NodeProto Node(params AttributeProto[] attributes)
    {
        var n = new NodeProto { Name = "n", OpType = "Op" };
        n.Attribute.AddRange(attributes);
        return n;
    }

    [Fact]
    public void Factories_set_name_type_and_value()
    {
        var i = Attr.Int("axis", -1);
        var f = Attr.Float("eps", 1e-5f);
        var s = Attr.String("mode", "constant");
        var ints = Attr.Ints("perm", 0, 2, 1);
        var floats = Attr.Floats("scales", 1f, 2.5f);
        var t = Attr.Tensor("value", TensorProtos.Float("v", [4f], 1));

        Assert.Equal(("axis", AttrType.Int, -1L), (i.Name, i.Type, i.I));
        Assert.Equal(("eps", AttrType.Float, 1e-5f), (f.Name, f.Type, f.F));
        Assert.Equal(("mode", AttrType.String, "constant"), (s.Name, s.Type, s.S.ToStringUtf8()));
        Assert.Equal(AttrType.Ints, ints.Type);
        Assert.Equal([0L, 2L, 1L], ints.Ints);
        Assert.Equal(AttrType.Floats, floats.Type);
        Assert.Equal([1f, 2.5f], floats.Floats);
        Assert.Equal(AttrType.Tensor, t.Type);
        Assert.Equal([4f], TensorProtos.ToFloatArray(t.T));
    }

    [Fact]
    public void Getters_return_present_values()
    {
        var n = Node(Attr.Int("axis", -2), Attr.Float("alpha", 0.2f), Attr.String("mode", "reflect"), Attr.Ints("pads", 1, 2, 3, 4));

        Assert.Equal(-2L, n.GetInt("axis", 0));
        Assert.Equal(0.2f, n.GetFloat("alpha", 1f));
        Assert.Equal("reflect", n.GetString("mode", "constant"));
        Assert.Equal([1L, 2L, 3L, 4L], n.GetInts("pads")!);
        Assert.Same(n.Attribute[1], n.Find("alpha"));
    }

    [Fact]
    public void Getters_return_defaults_when_absent()
    {
        var n = Node(Attr.Int("other", 5));

        Assert.Equal(7L, n.GetInt("axis", 7));
        Assert.Equal(0.5f, n.GetFloat("alpha", 0.5f));
        Assert.Equal("constant", n.GetString("mode", "constant"));
        Assert.Null(n.GetInts("pads"));
        Assert.Null(n.Find("axis"));
    }

    [Fact]
    public void Present_zero_values_win_over_defaults()
    {
        var n = Node(Attr.Int("keepdims", 0), Attr.Float("beta", 0f), Attr.String("s", ""), Attr.Ints("axes"));

        Assert.Equal(0L, n.GetInt("keepdims", 1));
        Assert.Equal(0f, n.GetFloat("beta", 1f));
        Assert.Equal("", n.GetString("s", "dflt"));
        Assert.Equal([], n.GetInts("axes")!);
    }

    [Fact]
    public void Find_returns_the_first_attribute_of_a_name()
    {
        var n = Node(Attr.Int("axis", 1), Attr.Int("axis", 2));
        Assert.Equal(1L, n.GetInt("axis", 0));
    }

    [Fact]
    public void Describe_names_domain_op_and_node_or_first_output()
    {
        var named = new NodeProto { Name = "mm", OpType = "MatMul" };
        var custom = new NodeProto { Name = "q", OpType = "QuickGelu", Domain = "com.microsoft" };
        var unnamed = new NodeProto { OpType = "Relu" };
        unnamed.Output.Add("act");
        var bare = new NodeProto { OpType = "Relu" };

        Assert.Equal("MatMul node 'mm'", named.Describe());
        Assert.Equal("com.microsoft.QuickGelu node 'q'", custom.Describe());
        Assert.Equal("Relu node '(unnamed, output act)'", unnamed.Describe());
        Assert.Equal("Relu node '(unnamed, output ?)'", bare.Describe());
    }
}
