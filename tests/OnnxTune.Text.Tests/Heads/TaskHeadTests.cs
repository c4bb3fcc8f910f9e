using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Layers;
using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;
using OnnxTune.Training.GradientChecking;
using Xunit.Abstractions;

namespace OnnxTune.Text.Tests.Heads;

[Collection(MiniLmCollection.Name)]
public sealed class TaskHeadTests(MiniLmFixture fixture, ITestOutputHelper log)
{
    private static readonly string[] Texts = ["how do I reset my password", "what's the weather like in paris tomorrow"];

    private ModelProto Encoder => OnnxModelReader.Load(fixture.Files.ModelPath);

    [Fact]
    public void Sequence_classification_head_is_one_inference_model_with_logits_batch_by_classes()
    {
        var head = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Outputs = 5 });
        Assert.Equal("logits", head.OutputName);
        Assert.Equal(MiniLmModel.HiddenSize, head.HiddenSize);
        var output = Assert.Single(head.Model.Graph.Output);
        Assert.Equal("logits", output.Name);
        // The pooler only fed the removed output; it is pruned with it.
        Assert.DoesNotContain(head.Model.Graph.Initializer, t => t.Name.StartsWith("pooler.", StringComparison.Ordinal));

        var w = head.Model.Graph.Initializer.Single(t => t.Name == TaskHeadBuilder.WeightName);
        var b = head.Model.Graph.Initializer.Single(t => t.Name == TaskHeadBuilder.BiasName);
        Assert.Equal([5L, MiniLmModel.HiddenSize], w.Dims);
        Assert.Equal([5L], b.Dims);
        var bound = 1 / Math.Sqrt(MiniLmModel.HiddenSize);
        var wv = TensorProtos.ToFloatArray(w);
        Assert.All(wv, v => Assert.InRange(v, -bound, bound));
        // U(-bound, bound) has standard deviation bound/sqrt(3); 1920 draws pin it within a few percent.
        var std = Math.Sqrt(wv.Select(v => (double)v * v).Average());
        Assert.InRange(std, 0.9 * bound / Math.Sqrt(3), 1.1 * bound / Math.Sqrt(3));

        var batch = fixture.Encoder.EncodeBatch(Texts);
        var (data, shape) = HeadRunner.Run(head.Model, batch);
        Assert.Equal([2L, 5L], shape);
        Assert.All(data, v => Assert.True(float.IsFinite(v)));
        // Inference mode: dropout is off, so two runs agree exactly.
        Assert.Equal(data, HeadRunner.Run(head.Model, batch).Data);
    }

    [Theory]
    [InlineData(HeadPooling.Mean)]
    [InlineData(HeadPooling.First)]
    public void Padding_does_not_change_the_logits(HeadPooling pooling)
    {
        var head = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Outputs = 3, Pooling = pooling, Seed = 4 });
        var short16 = fixture.CreateEncoder(16, BertPadding.MaxLength).EncodeBatch([Texts[0]]);
        var long40 = fixture.CreateEncoder(40, BertPadding.MaxLength).EncodeBatch([Texts[0]]);
        Assert.Equal(16, short16.SequenceLength);
        Assert.Equal(40, long40.SequenceLength);
        var a = HeadRunner.Run(head.Model, short16).Data;
        var b = HeadRunner.Run(head.Model, long40).Data;
        for (var i = 0; i < a.Length; i++)
            Assert.True(Math.Abs(a[i] - b[i]) < 1e-4, $"logit {i}: {a[i]} padded to 16 vs {b[i]} padded to 40");
    }

    [Fact]
    public void Mean_pooling_differs_from_an_unmasked_mean()
    {
        // Guard against a mask that is ignored: the same head with first-token pooling, and a manual check that
        // padded positions would change an unmasked mean, make the padding test above meaningful.
        var batch = fixture.CreateEncoder(40, BertPadding.MaxLength).EncodeBatch([Texts[0]]);
        var masked = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Outputs = 3, Seed = 4 });
        var allOnes = fixture.CreateEncoder(40, BertPadding.MaxLength).EncodeBatch([Texts[0]]);
        Array.Fill(allOnes.AttentionMask, 1L);
        var a = HeadRunner.Run(masked.Model, batch).Data;
        var b = HeadRunner.Run(masked.Model, allOnes).Data;
        Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, "attending to and averaging over padding should change the logits");
    }

    [Fact]
    public void Token_classification_and_regression_heads_have_the_right_shapes()
    {
        var batch = fixture.Encoder.EncodeBatch(Texts);
        var tokens = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Kind = TaskHeadKind.TokenClassification, Outputs = 7 });
        var (_, tokenShape) = HeadRunner.Run(tokens.Model, batch);
        Assert.Equal([2L, batch.SequenceLength, 7L], tokenShape);
        Assert.Equal(LossKind.CrossEntropy, tokens.Loss.Kind);
        Assert.Equal(-100, tokens.Loss.IgnoreIndex);

        var regression = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Kind = TaskHeadKind.Regression, Outputs = 1, Pooling = HeadPooling.First });
        Assert.Equal("predictions", regression.OutputName);
        Assert.Equal(LossKind.Mse, regression.Loss.Kind);
        var (_, regShape) = HeadRunner.Run(regression.Model, batch);
        Assert.Equal([2L, 1L], regShape);
    }

    [Fact]
    public void Dropout_trains_only_in_the_training_graph()
    {
        var head = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Outputs = 4, Dropout = 0.25f });
        var map = EncoderLayerMap.Create(head.Model);
        var built = TaskHeadArtifacts.Build(head.Model,
            new ArtifactOptions { Selection = new ParameterSelection { TrainableNames = map.HeadAndTopLayers(1) }, Loss = head.Loss });
        Assert.True(TrainingMode(built.Training));
        Assert.False(TrainingMode(built.Eval));
        Assert.False(TrainingMode(built.Inference));
        // The training graph's Dropout exposes its mask, which the backward pass multiplies in.
        var dropout = built.Training.Graph.Node.Single(n => n.OpType == "Dropout");
        Assert.Equal(2, dropout.Output.Count);
        Assert.Contains(built.Training.Graph.Node, n => n.Input.Contains(dropout.Output[1]));
        Assert.Equal(18, built.Manifest.TrainableParameters.Count);
        var ratio = head.Model.Graph.Node.Single(n => n.Output[0].StartsWith("head.dropout.ratio", StringComparison.Ordinal));
        Assert.Equal(0.25f, TensorProtos.ToFloatArray(ratio.Attribute[0].T)[0]);
    }

    [Fact]
    public void Head_and_top_layer_gradients_match_finite_differences_on_minilm()
    {
        var head = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Outputs = 3, Seed = 2 });
        var map = EncoderLayerMap.Create(head.Model);
        var ids = new long[] { 101, 2129, 2079, 102, 101, 7592, 102, 0 };
        var mask = new long[] { 1, 1, 1, 1, 1, 1, 1, 0 };
        var report = GradientChecker.Check(head.Model, new GradientCheckOptions
        {
            Selection = new ParameterSelection { TrainableNames = map.HeadAndTopLayers(1) },
            Loss = head.Loss,
            Seed = 3,
            MaxElementsPerParameter = 4,
            Inputs = new Dictionary<string, (Array, long[])>
            {
                [BertInputNames.InputIds] = (ids, [2, 4]),
                [BertInputNames.AttentionMask] = (mask, [2, 4]),
                [BertInputNames.TokenTypeIds] = (new long[8], [2, 4]),
            },
        });
        foreach (var p in report.Parameters)
            log.WriteLine($"{p.Name,-50} rel {p.MaxRelativeError:E2} abs {p.MaxAbsoluteError:E2} ({p.ElementsChecked}) {(p.Passed ? "ok" : "FAIL")}");
        log.WriteLine($"{(report.DoublePrecision ? "float64" : "float32")}, tolerance {report.Tolerance}, loss {report.Loss}");
        Assert.Equal(2 + 16, report.Parameters.Count);
        Assert.True(report.Passed, string.Join("; ", report.Parameters.Where(p => !p.Passed).Select(p => $"{p.Name} rel {p.MaxRelativeError:E2}")));
    }

    [Fact]
    public void Bad_options_are_refused_with_a_message()
    {
        Assert.Contains("at least one output", Assert.Throws<TaskHeadException>(() => TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Outputs = 0 })).Message);
        Assert.Contains("Dropout", Assert.Throws<TaskHeadException>(() => TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Dropout = 1 })).Message);
        Assert.Contains("no output 'nope'", Assert.Throws<TaskHeadException>(() => TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { EncoderOutput = "nope" })).Message);
        Assert.Contains("'mask'", Assert.Throws<TaskHeadException>(() => TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { AttentionMaskInput = "mask" })).Message);
        var once = TaskHeadBuilder.Build(Encoder, new TaskHeadOptions { Kind = TaskHeadKind.TokenClassification, Outputs = 2 });
        Assert.Contains("have a head already", Assert.Throws<TaskHeadException>(() => TaskHeadBuilder.Build(once.Model, new TaskHeadOptions { EncoderOutput = "logits", HiddenSize = 2 })).Message);
    }

    private static bool TrainingMode(ModelProto model)
    {
        var node = model.Graph.Node.Single(n => n.OpType == "Constant" && n.Output[0] == TaskHeadBuilder.DropoutTrainingModeName);
        return node.Attribute[0].T.RawData[0] != 0;
    }
}
