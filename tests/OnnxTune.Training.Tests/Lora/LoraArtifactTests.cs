using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Lora;

/// <summary>What <c>ArtifactOptions.Lora</c> builds, and the typed errors for targets it cannot adapt.</summary>
public sealed class LoraArtifactTests
{
    private static global::Onnx.ModelProto Mlp() => OnnxModelReader.Load(LoraCase.Load("l1_mlp_lora_adamw").ModelPath);

    private static ArtifactOptions With(LoraOptions lora, params string[] trainable) => new()
    {
        Selection = new ParameterSelection { Trainable = trainable },
        Lora = lora,
        Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
    };

    [Fact]
    public void A_glob_that_matches_nothing_is_named()
    {
        var e = Assert.Throws<LoraException>(() => ArtifactBuilder.Build(Mlp(), With(new LoraOptions { Targets = ["fc9.*"] })));
        Assert.Contains("'fc9.*'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_tensor_that_is_not_a_matmul_or_gemm_weight_is_named_with_its_node()
    {
        var e = Assert.Throws<LoraException>(() => ArtifactBuilder.Build(Mlp(), With(new LoraOptions { Targets = ["fc1.*"] })));
        Assert.Contains("'fc1.bias'", e.Message, StringComparison.Ordinal);
        Assert.Contains("Gemm", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_weight_cannot_be_both_adapted_and_trainable()
    {
        var e = Assert.Throws<LoraException>(() => ArtifactBuilder.Build(Mlp(), With(new LoraOptions { Targets = ["fc1.weight"] }, "fc1.*")));
        Assert.Contains("'fc1.weight'", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, null, 0.0, "Rank")]
    [InlineData(4, -1.0, 0.0, "Alpha")]
    [InlineData(4, null, 1.0, "Dropout")]
    public void Settings_out_of_range_name_the_setting(int rank, double? alpha, double dropout, string setting)
    {
        var e = Assert.Throws<LoraException>(() => ArtifactBuilder.Build(Mlp(), With(new LoraOptions { Targets = ["fc1.weight"], Rank = rank, Alpha = alpha, Dropout = dropout })));
        Assert.Contains("LoraOptions." + setting, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Base_model_is_frozen_and_the_checkpoint_holds_only_adapters_and_named_tensors()
    {
        using var tmp = new TempDirectory();
        var built = ArtifactGenerator.Generate(Mlp(), With(new LoraOptions { Targets = ["fc2.weight"] }), tmp.Path);
        Assert.Equal(["fc2.weight.lora_A", "fc2.weight.lora_B"], built.Manifest.TrainableParameters.Select(p => p.Name));
        Assert.Equal(["8", "16"], built.Manifest.TrainableParameters[0].Shape);   // [r, in]
        Assert.Equal(["4", "8"], built.Manifest.TrainableParameters[1].Shape);    // [out, r]
        var (meta, tensors) = CheckpointStore.Load(tmp.Combine("checkpoint"));
        Assert.Equal(["fc2.weight.lora_A", "fc2.weight.lora_B"], meta.Parameters.Select(p => p.Name));
        Assert.All(tensors.Get("fc2.weight.lora_B").ToFloatArray(), v => Assert.Equal(0f, v));
        var a = tensors.Get("fc2.weight.lora_A").ToFloatArray();
        Assert.All(a, v => Assert.InRange(v, -0.25f, 0.25f));                     // U(-1/sqrt(16), 1/sqrt(16))
        Assert.True(a.Select(v => v).Distinct().Count() == a.Length);
        var manifest = ArtifactManifest.Load(tmp.Path);
        var w = Assert.Single(manifest.Lora!.Weights);
        Assert.Equal(("fc2.weight", 16L, 4L, true, 2.0), (w.Weight, w.In, w.Out, w.OutIn, w.MergeFactor));
    }

    [Fact]
    public void Adapter_dropout_runs_in_the_training_graph_only()
    {
        using var tmp = new TempDirectory();
        var built = ArtifactGenerator.Generate(Mlp(), With(new LoraOptions { Targets = ["fc1.weight", "fc2.weight"], Dropout = 0.25 }), tmp.Path);
        bool Mode(global::Onnx.ModelProto m, global::Onnx.NodeProto dropout) =>
            m.Graph.Node.Single(n => n.Output.Contains(dropout.Input[2])).Attribute.Single(a => a.Name == "value").T.RawData[0] != 0;
        var trainDropouts = built.Training.Graph.Node.Where(n => n.OpType == "Dropout").ToList();
        Assert.Equal(2, trainDropouts.Count);
        Assert.All(trainDropouts, d => Assert.True(Mode(built.Training, d)));
        var evalDropouts = built.Eval.Graph.Node.Where(n => n.OpType == "Dropout").ToList();
        Assert.Equal(2, evalDropouts.Count);
        Assert.All(evalDropouts, d => Assert.False(Mode(built.Eval, d)));
        Assert.DoesNotContain(built.Inference.Graph.Node, n => n.OpType == "Dropout");

        using var engine = TrainingEngine.Open(tmp.Path, new TrainingEngineOptions { IntraOpThreads = 1, Seed = 1 });
        var losses = LoraCase.Load("l1_mlp_lora_adamw").Train(engine, maxSteps: 5);
        Assert.All(losses, l => Assert.True(float.IsFinite(l)));
        Assert.Contains(engine.GetParameter("fc1.weight.lora_B"), v => v != 0);
    }
}
