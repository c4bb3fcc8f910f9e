using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Layers;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Text.Tests.Heads;

[Collection(MiniLmCollection.Name)]
public sealed class EncoderLayerMapTests(MiniLmFixture fixture)
{
    [Fact]
    public void Every_minilm_parameter_gets_a_block_and_numbered_matrices_land_in_their_layer()
    {
        var model = OnnxModelReader.Load(fixture.Files.ModelPath);
        var map = EncoderLayerMap.Create(model);
        Assert.Equal(6, map.LayerCount);
        Assert.All(map.Assignments, a => Assert.NotNull(a.Block));

        var numbered = map.Assignments.Where(a => a.Parameter.All(char.IsAsciiDigit)).ToList();
        var matrices = numbered.Where(a => model.Graph.Initializer.First(t => t.Name == a.Parameter).Dims.Count == 2).ToList();
        Assert.Equal(36, matrices.Count);
        Assert.All(matrices, a => Assert.NotNull(a.Via));
        for (var layer = 0; layer < 6; layer++)
            Assert.Equal(6, matrices.Count(a => a.Layer == layer));
        foreach (var name in new[] { "927", "928", "931", "937", "938", "939" })
            Assert.Equal("encoder.layer.0", map[name].Block);
        foreach (var name in new[] { "992", "993", "996", "1002", "1003", "1004" })
            Assert.Equal("encoder.layer.5", map[name].Block);
        Assert.Equal("encoder.layer.0.attention.self.query.bias", map["927"].Via);

        // 6 weight matrices + 6 biases + 2 LayerNorms (weight, bias) per layer.
        for (var layer = 0; layer < 6; layer++)
            Assert.Equal(16, map.ParametersOf(EncoderLayerMap.LayerBlock(layer)).Count);
        Assert.Contains("embeddings.word_embeddings.weight", map.ParametersOf(EncoderLayerMap.Embeddings));
        Assert.NotEmpty(map.ParametersOf(EncoderLayerMap.Pooler));
    }

    [Fact]
    public void Head_and_top_layers_select_exactly_those_blocks()
    {
        var head = TaskHeadBuilder.Build(OnnxModelReader.Load(fixture.Files.ModelPath), new TaskHeadOptions { Outputs = 150 });
        var map = EncoderLayerMap.Create(head.Model);
        var names = map.HeadAndTopLayers(2);
        Assert.Equal(2 + 32, names.Count);
        Assert.All(names, n => Assert.Contains(map[n].Block, new[] { "head", "encoder.layer.4", "encoder.layer.5" }));
        Assert.Equal(["head.dense.weight", "head.dense.bias"], map.HeadAndTopLayers(0));
        Assert.Contains("encoder has 6", Assert.Throws<LayerSelectionException>(() => map.HeadAndTopLayers(7)).Message);
    }

    [Fact]
    public void Unnamed_weights_follow_the_graph_to_the_nearest_named_parameter()
    {
        var model = new ModelProto { IrVersion = 8, Graph = new GraphProto { Name = "g" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        var e = new GraphEditor(model.Graph);
        e.Reserve("x");
        e.AddInput(ValueInfos.Tensor("x", DataType.Float, "b", 2L));
        e.AddInitializer(TensorProtos.Float("11", [1, 2, 3, 4], 2, 2), makeUnique: false);
        e.AddInitializer(TensorProtos.Float("bert.encoder.layer.3.output.dense.bias", [0, 0], 2), makeUnique: false);
        e.AddInitializer(TensorProtos.Float("12", [1, 2, 3, 4], 2, 2), makeUnique: false);
        e.AddInitializer(TensorProtos.Float("bert.embeddings.LayerNorm.weight", [1, 1], 2), makeUnique: false);
        e.AddInitializer(TensorProtos.Float("13", [1, 2, 3, 4], 2, 2), makeUnique: false);
        var m = e.Add("MatMul", ["x", "11"], "m");
        var a = e.Add("Add", [m, "bert.encoder.layer.3.output.dense.bias"], "a");
        // 12 reaches a named parameter only three nodes on.
        var r = e.Add("Relu", [e.Add("MatMul", [a, "12"], "m2")], "r");
        var t = e.Add("Tanh", [r], "t");
        var y = e.Add("Mul", [t, "bert.embeddings.LayerNorm.weight"], "y");
        // 13 leads nowhere named.
        var z = e.Add("MatMul", [y, "13"], "z");
        model.Graph.Output.Add(ValueInfos.Tensor(z, DataType.Float, "b", 2L));

        var map = EncoderLayerMap.Create(model);
        Assert.Equal(("encoder.layer.3", 3, "bert.encoder.layer.3.output.dense.bias"), (map["11"].Block, map["11"].Layer, map["11"].Via));
        Assert.Equal(("embeddings", "bert.embeddings.LayerNorm.weight"), (map["12"].Block, map["12"].Via));
        Assert.Null(map["13"].Block);
        Assert.Equal(4, map.LayerCount);
        Assert.Equal("bert.encoder.layer.3.output.dense.weight", map["11"].InferredName);
        Assert.Null(map["12"].InferredName);
        // Globs see inferred names: the unnamed 11 is a ".weight", so "*.bias" leaves it out and "*dense*" takes it.
        Assert.Equal(["bert.encoder.layer.3.output.dense.bias"], map.Match("*.bias"));
        Assert.Equal(["11", "bert.encoder.layer.3.output.dense.bias"], map.Match("*.dense.*"));
        Assert.Equal(["11", "bert.embeddings.LayerNorm.weight"], map.Select(1, ["*LayerNorm*"], ["*.bias"]));
        Assert.Equal(["12", "bert.embeddings.LayerNorm.weight", "13"], map.Select(null, [], ["*layer.3*"]));
        Assert.Contains("--frozen 'nope*' matches no", Assert.Throws<LayerSelectionException>(() => map.Select(null, [], ["nope*"])).Message);
        Assert.Equal(["11", "bert.encoder.layer.3.output.dense.bias"], map.HeadAndTopLayers(1).Order(StringComparer.Ordinal));
    }
}
