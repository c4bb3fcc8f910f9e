using global::Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using DataType = global::Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Onnx.Tests.Graph;

public sealed class GraphEditorTests
{
    /// <summary>A graph using every kind of name: input, output, initializer, value_info, node name, node outputs/inputs.</summary>
    private static GraphProto Sample()
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(ValueInfos.Tensor("in", DataType.Float, 2L));
        g.Output.Add(ValueInfos.Tensor("out", DataType.Float, 2L));
        g.Initializer.Add(TensorProtos.Float("w", [1f, 2f], 2));
        g.ValueInfo.Add(ValueInfos.Tensor("vi", DataType.Float, 2L));
        var n = new NodeProto { Name = "node0", OpType = "Mul" };
        n.Input.AddRange(["in", "w", "dangling_input"]);
        n.Output.AddRange(["mid", "mid2"]);
        g.Node.Add(n);
        return g;
    }

    [Theory]
    [InlineData("in")]
    [InlineData("out")]
    [InlineData("w")]
    [InlineData("vi")]
    [InlineData("node0")]
    [InlineData("mid")]
    [InlineData("mid2")]
    [InlineData("dangling_input")]
    public void Names_already_in_the_graph_are_used_and_UniqueName_avoids_them(string name)
    {
        var editor = new GraphEditor(Sample());

        Assert.True(editor.IsUsed(name));
        var fresh = editor.UniqueName(name);

        Assert.Equal($"{name}_1", fresh);
        Assert.True(editor.IsUsed(fresh));
    }

    [Fact]
    public void UniqueName_returns_the_hint_when_free_then_numbered_names()
    {
        var editor = new GraphEditor(new GraphProto { Name = "g" });

        Assert.False(editor.IsUsed("t"));
        Assert.Equal("t", editor.UniqueName("t"));
        Assert.Equal("t_1", editor.UniqueName("t"));
        Assert.Equal("t_2", editor.UniqueName("t"));
        Assert.True(editor.IsUsed("t_2"));
    }

    [Fact]
    public void UniqueName_skips_numbered_names_that_are_already_taken()
    {
        var g = Sample();
        g.Initializer.Add(TensorProtos.Float("mid_1", [0f], 1));
        g.Initializer.Add(TensorProtos.Float("mid_2", [0f], 1));
        var editor = new GraphEditor(g);
        editor.Reserve("mid_4");

        Assert.Equal("mid_3", editor.UniqueName("mid"));
        Assert.Equal("mid_5", editor.UniqueName("mid"));
    }

    [Fact]
    public void Thousand_UniqueNames_are_all_distinct_and_unused_before()
    {
        var g = Sample();
        var before = new HashSet<string>(["in", "out", "w", "vi", "node0", "mid", "mid2", "dangling_input"]);
        var editor = new GraphEditor(g);
        var hints = new[] { "in", "mid", "mid_1", "x", "w" };
        var seen = new HashSet<string>();

        for (var i = 0; i < 1000; i++)
        {
            var name = editor.UniqueName(hints[i % hints.Length]);
            Assert.DoesNotContain(name, before);
            Assert.True(seen.Add(name), $"'{name}' handed out twice");
        }
    }

    [Fact]
    public void Reserve_of_a_free_name_returns_it_and_of_a_used_name_throws_naming_name_and_graph()
    {
        var editor = new GraphEditor(Sample());

        Assert.Equal("free", editor.Reserve("free"));
        var e1 = Assert.Throws<OnnxTuneException>(() => editor.Reserve("free"));
        var e2 = Assert.Throws<OnnxTuneException>(() => editor.Reserve("mid"));

        Assert.Contains("'free'", e1.Message);
        Assert.Contains("'mid'", e2.Message);
        Assert.Contains("'g'", e2.Message);
    }

    [Fact]
    public void AddNode_appends_node_with_inputs_outputs_attributes_and_a_unique_name()
    {
        var g = Sample();
        var editor = new GraphEditor(g);
        var y = editor.Reserve("y");

        var node = editor.AddNode("Gemm", ["in", "w"], [y], Attr.Int("transB", 1), Attr.Float("alpha", 2f));
        var again = editor.AddNode("Gemm", ["in", "w"], [editor.UniqueName("y")]);

        Assert.Same(node, g.Node[1]);
        Assert.Same(again, g.Node[2]);
        Assert.Equal("Gemm", node.OpType);
        Assert.Equal(["in", "w"], node.Input);
        Assert.Equal(["y"], node.Output);
        Assert.Equal(1L, node.GetInt("transB", 0));
        Assert.Equal(2f, node.GetFloat("alpha", 1f));
        Assert.Equal("Gemm_y", node.Name);
        Assert.Equal("Gemm_y_1", again.Name);
        Assert.Equal(["y_1"], again.Output);
        Assert.True(editor.IsUsed("Gemm_y"));
    }

    [Fact]
    public void AddNode_without_outputs_gets_a_node_based_name()
    {
        var editor = new GraphEditor(new GraphProto { Name = "g" });

        var node = editor.AddNode("Print", ["a"], []);

        Assert.Equal("Print_node", node.Name);
        Assert.Equal("Print_node_1", editor.AddNode("Print", ["a"], []).Name);
    }

    [Fact]
    public void Add_creates_a_unique_output_from_the_hint_and_returns_it()
    {
        var g = Sample();
        var editor = new GraphEditor(g);

        var first = editor.Add("Relu", ["mid"], "mid");
        var second = editor.Add("Relu", ["mid"], "act", Attr.String("note", "x"));

        Assert.Equal("mid_1", first);
        Assert.Equal("act", second);
        Assert.Equal(["mid_1"], g.Node[1].Output);
        Assert.Equal(["mid"], g.Node[1].Input);
        Assert.Equal("x", g.Node[2].GetString("note", ""));
        Assert.Equal(3, g.Node.Count);
    }

    [Fact]
    public void AddInitializer_with_makeUnique_renames_the_tensor_on_collision()
    {
        var g = Sample();
        var editor = new GraphEditor(g);

        var name = editor.AddInitializer(TensorProtos.Float("w", [3f], 1));

        Assert.Equal("w_1", name);
        Assert.Equal(["w", "w_1"], g.Initializer.Select(t => t.Name));
        Assert.Equal([3f], TensorProtos.ToFloatArray(g.Initializer[1]));
        Assert.True(editor.IsUsed("w_1"));
    }

    [Fact]
    public void AddInitializer_without_makeUnique_keeps_a_free_name_and_throws_on_a_used_one()
    {
        var g = Sample();
        var editor = new GraphEditor(g);

        Assert.Equal("bias", editor.AddInitializer(TensorProtos.Float("bias", [1f], 1), makeUnique: false));
        var e = Assert.Throws<OnnxTuneException>(() => editor.AddInitializer(TensorProtos.Float("mid", [1f], 1), makeUnique: false));

        Assert.Contains("'mid'", e.Message);
        Assert.Equal(["w", "bias"], g.Initializer.Select(t => t.Name));
    }

    [Fact]
    public void Constant_helpers_add_typed_initializers_with_unique_names()
    {
        var g = Sample();
        var editor = new GraphEditor(g);

        var f = editor.ConstantFloat("w", 0.25f);
        var i = editor.ConstantInt64s("shape", 2, -1);

        Assert.Equal("w_1", f);
        Assert.Equal("shape", i);
        var ft = g.Initializer.Single(t => t.Name == f);
        Assert.Equal([0.25f], TensorProtos.ToFloatArray(ft));
        Assert.Empty(ft.Dims); // a scalar
        var it = g.Initializer.Single(t => t.Name == i);
        Assert.Equal([2L, -1L], TensorProtos.ToInt64Array(it));
        Assert.Equal((int)DataType.Int64, it.DataType);
    }

    [Fact]
    public void AddInput_and_AddOutput_append_value_infos()
    {
        var g = Sample();
        var editor = new GraphEditor(g);

        editor.AddInput(ValueInfos.Tensor("extra_in", DataType.Int64, "batch"));
        editor.AddOutput(ValueInfos.Tensor("extra_out", DataType.Float));

        Assert.Equal(["in", "extra_in"], g.Input.Select(v => v.Name));
        Assert.Equal(["out", "extra_out"], g.Output.Select(v => v.Name));
    }

    [Fact]
    public void UniqueName_never_returns_an_output_added_through_AddNode()
    {
        var editor = new GraphEditor(new GraphProto { Name = "g" });
        editor.AddNode("Relu", ["x"], ["y"]);

        Assert.True(editor.IsUsed("y"));
        Assert.NotEqual("y", editor.UniqueName("y"));
    }

    [Fact]
    public void UniqueName_never_returns_an_input_added_through_AddInput()
    {
        var editor = new GraphEditor(new GraphProto { Name = "g" });
        editor.AddInput(ValueInfos.Tensor("x", DataType.Float, 1L));
        editor.AddOutput(ValueInfos.Tensor("z", DataType.Float, 1L));

        Assert.NotEqual("x", editor.UniqueName("x"));
        Assert.NotEqual("z", editor.UniqueName("z"));
    }

    [Fact]
    public void AddNode_marks_its_generated_node_name_as_used()
    {
        var editor = new GraphEditor(new GraphProto { Name = "g" });
        var node = editor.AddNode("Relu", ["x"], ["y"]);

        Assert.True(editor.IsUsed(node.Name));
        Assert.NotEqual(node.Name, editor.UniqueName(node.Name));
    }

    [Fact]
    public void Reserve_then_AddNode_with_that_output_does_not_throw()
    {
        var g = new GraphProto { Name = "g" };
        var editor = new GraphEditor(g);
        var y = editor.Reserve("y");

        editor.AddNode("Relu", ["x"], [y]);

        Assert.Equal(["y"], g.Node.Single().Output);
        Assert.Throws<OnnxTuneException>(() => editor.Reserve("y"));
    }

    [Fact]
    public void AddNode_output_can_no_longer_be_reserved()
    {
        var editor = new GraphEditor(new GraphProto { Name = "g" });
        editor.AddNode("Relu", ["x"], ["y"]);

        var e = Assert.Throws<OnnxTuneException>(() => editor.Reserve("y"));
        Assert.Contains("'y'", e.Message);
    }

    [Fact]
    public void AddNode_skips_empty_optional_outputs()
    {
        var editor = new GraphEditor(new GraphProto { Name = "g" });
        editor.AddNode("Dropout", ["x"], ["y", ""]);

        Assert.False(editor.IsUsed(""));
    }

    [Fact]
    public void Reserve_then_AddInput_and_AddOutput_of_a_produced_name_do_not_throw()
    {
        var g = new GraphProto { Name = "g" };
        var editor = new GraphEditor(g);
        var x = editor.Reserve("x");
        editor.AddInput(ValueInfos.Tensor(x, DataType.Float, 1L));
        var y = editor.Add("Relu", [x], "y");
        editor.AddOutput(ValueInfos.Tensor(y, DataType.Float, 1L));

        Assert.Equal(["x"], g.Input.Select(v => v.Name));
        Assert.Equal(["y"], g.Output.Select(v => v.Name));
        Assert.Throws<OnnxTuneException>(() => editor.Reserve("x"));
        Assert.Throws<OnnxTuneException>(() => editor.Reserve("y"));
    }

    [Fact]
    public void An_output_declared_before_its_producer_is_used_so_only_the_caller_who_reserved_it_writes_it()
    {
        var g = new GraphProto { Name = "g" };
        var editor = new GraphEditor(g);
        Assert.Equal("w.out", editor.Reserve("w.out"));
        editor.AddOutput(ValueInfos.Tensor("w.out", DataType.Float, 1L));
        editor.AddOutput(ValueInfos.Tensor("z", DataType.Float, 1L));

        Assert.True(editor.IsUsed("w.out"));
        Assert.True(editor.IsUsed("z"));
        Assert.NotEqual("z", editor.UniqueName("z"));
        Assert.Throws<OnnxTuneException>(() => editor.Reserve("w.out"));
        Assert.Throws<OnnxTuneException>(() => editor.Reserve("z"));
        editor.AddNode("Identity", ["w"], ["w.out"]);
        Assert.Equal(["w.out", "z"], g.Output.Select(o => o.Name));
    }

    [Fact]
    public void Outputs_of_a_wrapped_graph_cannot_be_reserved_and_input_names_cannot_be_reserved_after_AddInput()
    {
        var editor = new GraphEditor(Sample());
        editor.AddInput(ValueInfos.Tensor("new_in", DataType.Float, 1L));

        Assert.Throws<OnnxTuneException>(() => editor.Reserve("out"));
        Assert.Throws<OnnxTuneException>(() => editor.Reserve("new_in"));
    }

    [Fact]
    public void Constructor_rejects_null_graph()
    {
        Assert.Throws<ArgumentNullException>(() => new GraphEditor(null!));
    }
}
