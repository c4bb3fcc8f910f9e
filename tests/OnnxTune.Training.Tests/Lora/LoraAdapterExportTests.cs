using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Adapters;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Lora;

/// <summary>
/// Exported adapters served the way ONNX Runtime serves LoRA: the adapter-ready base in one session, the adapter
/// loaded with <see cref="OrtLoraAdapter"/> and activated per run (<see cref="RunOptions.AddActiveLoraAdapter"/>).
/// </summary>
public sealed class LoraAdapterExportTests
{
    [Theory]
    [InlineData("l1_mlp_lora_adamw")]      // Gemm transB = 1 weights and a trainable bias
    [InlineData("l2_attention_lora_sgd")]  // MatMul [in, out] weights on 3-D activations and a trainable head
    public void Adapter_through_the_ort_lora_api_gives_the_merged_model_and_the_base_alone_the_original(string caseName)
    {
        var c = LoraCase.Load(caseName);
        using var tmp = new TempDirectory();
        ArtifactGenerator.Generate(OnnxModelReader.Load(c.ModelPath), c.Options(), tmp.Path);
        using (var engine = TrainingEngine.Open(tmp.Path, new TrainingEngineOptions { IntraOpThreads = 1 }))
        {
            c.Train(engine, maxSteps: 6);
            engine.ExportMergedModel(tmp.Combine("merged.onnx"));
            engine.ExportInferenceModel(tmp.Combine("unmerged.onnx"));
            engine.ExportAdapter(tmp.Combine("tuned.onnx_adapter"), tmp.Combine("base.onnx"));
        }
        var (x, shape) = c.Inputs(9);
        var original = Run(c.ModelPath, x, shape);
        var merged = Run(tmp.Combine("merged.onnx"), x, shape);
        var unmerged = Run(tmp.Combine("unmerged.onnx"), x, shape);
        var untuned = Run(tmp.Combine("base.onnx"), x, shape);
        using var adapter = OrtLoraAdapter.Create(tmp.Combine("tuned.onnx_adapter"), null);
        var tuned = Run(tmp.Combine("base.onnx"), x, shape, adapter);

        AssertClose(original, untuned, 1e-6);   // zero lora_B and the untrained values: the untuned model
        AssertClose(merged, tuned, 1e-5);       // the adapter gives the merged model
        AssertClose(merged, unmerged, 1e-5);    // folding does not change the function
        Assert.True(original.Zip(merged).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, "training changed nothing");

        // The file is ONNX Runtime's format and holds exactly the trained tensors.
        var (adapterVersion, modelVersion, parameters) = OnnxAdapterFile.Read(tmp.Combine("tuned.onnx_adapter"));
        Assert.Equal((1, 1), (adapterVersion, modelVersion));
        var manifest = Autodiff.Artifacts.ArtifactManifest.Load(tmp.Path);
        Assert.Equal(manifest.TrainableParameters.Select(p => p.Name), parameters.Select(p => p.Name));
    }

    [Fact]
    public void Adapter_file_round_trips_and_a_damaged_one_is_refused_by_name()
    {
        using var tmp = new TempDirectory();
        var values = new float[] { 1, -2, 3.5f, 0, 5, 6 };
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        OnnxAdapterFile.Write(tmp.Combine("a.onnx_adapter"), [new AdapterParameter("w.lora_A", [2, 3], false, bytes)], adapterVersion: 7, modelVersion: 3);
        var (av, mv, ps) = OnnxAdapterFile.Read(tmp.Combine("a.onnx_adapter"));
        Assert.Equal((7, 3), (av, mv));
        Assert.Equal("w.lora_A", Assert.Single(ps).Name);
        Assert.Equal([2L, 3], ps[0].Shape);
        Assert.Equal(bytes, ps[0].Data);
        // ORT accepts what we write.
        using (OrtLoraAdapter.Create(tmp.Combine("a.onnx_adapter"), null)) { }

        File.WriteAllBytes(tmp.Combine("bad.onnx_adapter"), new byte[64]);
        var e = Assert.Throws<AdapterFormatException>(() => OnnxAdapterFile.Read(tmp.Combine("bad.onnx_adapter")));
        Assert.Contains("bad.onnx_adapter", e.Message, StringComparison.Ordinal);
    }

    private static float[] Run(string modelPath, float[] x, long[] shape, OrtLoraAdapter? adapter = null)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(modelPath, options);
        using var run = new RunOptions();
        if (adapter is not null) run.AddActiveLoraAdapter(adapter);
        using var input = OrtValue.CreateTensorValueFromMemory(x, shape);
        using var outputs = session.Run(run, ["x"], [input], ["logits"]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static void AssertClose(float[] want, float[] got, double tol)
    {
        Assert.Equal(want.Length, got.Length);
        for (var i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - got[i]) <= tol * Math.Max(1, Math.Abs(want[i])), $"[{i}]: {got[i]:R} vs {want[i]:R}");
    }
}
