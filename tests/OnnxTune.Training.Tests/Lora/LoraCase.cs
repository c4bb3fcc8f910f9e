using System.Text.Json;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Tests.TestUtilities;

namespace OnnxTune.Training.Tests.Lora;

/// <summary>A LoRA parity case of tests/fixtures/parity (l*_..., see tests/parity/README.md) and how to train it.</summary>
internal sealed class LoraCase
{
    private LoraCase(string folder, JsonElement json)
    {
        Folder = folder;
        Json = json;
    }

    public string Folder { get; }

    public JsonElement Json { get; }

    public string ModelPath => Path.Combine(Folder, "model.onnx");

    public static LoraCase Load(string name)
    {
        var folder = Path.Combine(Fixtures.Root, "parity", name);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "case.json")));
        return new LoraCase(folder, doc.RootElement.Clone());
    }

    public ArtifactOptions Options()
    {
        var lora = Json.GetProperty("lora");
        var hp = Json.GetProperty("hyperparameters");
        var isAdam = Json.GetProperty("optimizer").GetString() == "adamw";
        return new ArtifactOptions
        {
            Selection = new ParameterSelection { Trainable = Json.GetProperty("trainable_globs").EnumerateArray().Select(e => e.GetString()!).ToList() },
            Lora = new LoraOptions
            {
                Targets = lora.GetProperty("targets").EnumerateArray().Select(e => e.GetString()!).ToList(),
                Rank = lora.GetProperty("rank").GetInt32(),
                Alpha = lora.GetProperty("alpha").GetDouble(),
            },
            Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
            Optimizer = new OptimizerSpec
            {
                Kind = isAdam ? OptimizerKind.AdamW : OptimizerKind.Sgd,
                LearningRate = hp.GetProperty("lr").GetDouble(),
                WeightDecay = hp.GetProperty("weight_decay").GetDouble(),
                Momentum = isAdam ? 0 : hp.GetProperty("momentum").GetDouble(),
            },
        };
    }

    /// <summary>The case's epochs of in-order batches, one update per batch; returns the step losses.</summary>
    public List<float> Train(TrainingEngine engine, int? maxSteps = null)
    {
        var data = SafeTensorsFile.Read(Path.Combine(Folder, "data.safetensors"));
        var x = data.Get("x");
        var labels = data.Get("labels").ToInt64Array();
        var xs = x.ToFloatArray();
        var samples = (int)x.Shape[0];
        var row = (int)(x.ElementCount() / samples);
        var batchSize = Json.GetProperty("batch_size").GetInt32();
        var losses = new List<float>();
        for (var epoch = 0; epoch < Json.GetProperty("epochs").GetInt32(); epoch++)
            for (var start = 0; start < samples; start += batchSize)
            {
                if (losses.Count == maxSteps) return losses;
                var count = Math.Min(batchSize, samples - start);
                var batch = new TrainingBatch().Add("x", xs.AsMemory(start * row, count * row), [count, .. x.Shape[1..]])
                    .WithLabels(labels.AsMemory(start, count), [count]);
                losses.Add(engine.TrainStep(batch));
                engine.OptimizerStep();
            }
        return losses;
    }

    /// <summary>The first <paramref name="count"/> inputs of the data file, [count, ...].</summary>
    public (float[] Data, long[] Shape) Inputs(int count)
    {
        var x = SafeTensorsFile.Read(Path.Combine(Folder, "data.safetensors")).Get("x");
        var row = (int)(x.ElementCount() / x.Shape[0]);
        return (x.ToFloatArray()[..(count * row)], [count, .. x.Shape[1..]]);
    }
}
