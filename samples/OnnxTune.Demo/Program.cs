using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Demo;
using OnnxTune.Onnx.Models;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training;
using OnnxTune.Training.Schedules;
using TrainingSession = OnnxTune.Training.TrainingSession;

// OnnxTune demo: build an intent classifier for CLINC150 (150 intents), generate training artifacts made of standard
// ONNX operators, fine-tune it with the plain ONNX Runtime, checkpoint, export, and serve the exported model.
var epochs = ArgValue("--epochs", 4);
var outDir = Path.GetFullPath(ArgString("--out", Path.Combine(RepoRoot(), "artifacts", "demo")));
const int Buckets = 4096, Hidden = 256, BatchSize = 64;

var data = Clinc150.Load(Clinc150.Locate());
Console.WriteLine($"CLINC150: {data.Train.Count} training and {data.Test.Count} test utterances, {data.Intents.Count} intents.");
var featurizer = new HashedBagOfWords(Buckets);
var labelOf = data.Intents.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => (long)x.i);
(float[] X, long[] Y) Featurize(IReadOnlyList<(string Text, string Intent)> rows)
{
    var x = new float[rows.Count * Buckets];
    var y = new long[rows.Count];
    for (var i = 0; i < rows.Count; i++)
    {
        featurizer.Featurize(rows[i].Text, x.AsSpan(i * Buckets, Buckets));
        y[i] = labelOf[rows[i].Intent];
    }
    return (x, y);
}
var (trainX, trainY) = Featurize(data.Train);
var (testX, testY) = Featurize(data.Test);

// 1. An inference model, as an app would ship it (here built in code: Gemm 4096→256, ReLU, Gemm 256→150).
var model = new MlpModelBuilder(Buckets) { InputName = "features", OutputName = "logits" }.Layer(Hidden).Layer(data.Intents.Count).Build(seed: 42);
Directory.CreateDirectory(outDir);
var sourcePath = Path.Combine(outDir, "base_model.onnx");
OnnxModelWriter.Save(model, sourcePath);

// 2. Training artifacts: training, eval and optimizer graphs plus manifest (ORT's generate_artifacts, in .NET).
var artifactsDir = Path.Combine(outDir, "artifacts");
var sw = Stopwatch.StartNew();
var artifacts = ArtifactBuilder.Build(model, new ArtifactOptions
{
    Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits", IgnoreIndex = -100 },
    Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 2e-3 },
}, (p, o, opset) => OptimizerGraphBuilder.Build(p, o, opset), ArtifactBuilder.FileSha256(sourcePath));
ArtifactBuilder.Save(artifacts, artifactsDir);
Console.WriteLine($"Artifacts in {artifactsDir} ({artifacts.Training.Graph.Node.Count} training-graph nodes, {artifacts.Manifest.TrainableParameters.Count} trainable tensors) built in {sw.ElapsedMilliseconds} ms.");

// 3. Train with the plain InferenceSession (2 threads), linear warm-up then decay.
using var session = TrainingSession.Open(artifactsDir, new TrainingSessionOptions { IntraOpThreads = 2, Seed = 1 });
var stepsPerEpoch = (trainY.Length + BatchSize - 1) / BatchSize;
session.Schedule = LearningRateSchedules.LinearWithWarmup(2e-3, stepsPerEpoch / 2, stepsPerEpoch * epochs);
Console.WriteLine($"Accuracy before training: {Accuracy(session, testX, testY):P1}");
Console.WriteLine();
Console.WriteLine("epoch | mean loss | test accuracy | ms/step");
Console.WriteLine("------+-----------+---------------+--------");
var rng = new Random(7);
var order = Enumerable.Range(0, trainY.Length).ToArray();
var xb = new float[BatchSize * Buckets];
var yb = new long[BatchSize];
for (var epoch = 1; epoch <= epochs; epoch++)
{
    rng.Shuffle(order);
    double lossSum = 0;
    var stepWatch = Stopwatch.StartNew();
    for (var start = 0; start < order.Length; start += BatchSize)
    {
        var n = Math.Min(BatchSize, order.Length - start);
        for (var i = 0; i < n; i++)
        {
            trainX.AsSpan(order[start + i] * Buckets, Buckets).CopyTo(xb.AsSpan(i * Buckets));
            yb[i] = trainY[order[start + i]];
        }
        var batch = new TrainingBatch().Add("features", xb.AsMemory(0, n * Buckets), n, Buckets).WithLabels(yb.AsMemory(0, n), n);
        lossSum += session.TrainStep(batch);
        session.OptimizerStep();
    }
    var msPerStep = stepWatch.Elapsed.TotalMilliseconds / stepsPerEpoch;
    Console.WriteLine($"{epoch,5} | {lossSum / stepsPerEpoch,9:F4} | {Accuracy(session, testX, testY),13:P1} | {msPerStep,6:F2}");
}

// 4. Checkpoint and export: the exported model is the source graph with trained weights, for any ORT user.
var checkpointDir = Path.Combine(outDir, "checkpoint");
session.SaveCheckpoint(checkpointDir, new Dictionary<string, string> { ["dataset"] = "clinc150" });
var exported = Path.Combine(outDir, "model.onnx");
session.ExportInferenceModel(exported);
Console.WriteLine();
Console.WriteLine($"Checkpoint: {checkpointDir}");
Console.WriteLine($"Exported inference model: {exported}");

using var inference = new InferenceSession(exported);
foreach (var text in new[] { "how do i reset my pin number", "what's the weather like tomorrow in boston", "book me a table for two at 7pm", "please transfer $200 from checking to savings" })
{
    var x = new float[Buckets];
    featurizer.Featurize(text, x);
    using var input = OrtValue.CreateTensorValueFromMemory(x, [1, Buckets]);
    using var results = inference.Run(new RunOptions(), ["features"], [input], ["logits"]);
    var logits = results[0].GetTensorDataAsSpan<float>();
    var best = 0;
    for (var i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
    Console.WriteLine($"  \"{text}\" → {data.Intents[best]}");
}
return 0;

static double Accuracy(TrainingSession session, float[] x, long[] y)
{
    const int B = 512;
    var buckets = x.Length / y.Length;
    var correct = 0;
    for (var start = 0; start < y.Length; start += B)
    {
        var n = Math.Min(B, y.Length - start);
        var batch = new TrainingBatch().Add("features", x.AsMemory(start * buckets, n * buckets), n, buckets).WithLabels(y.AsMemory(start, n), n);
        var logits = session.EvalStep(batch).Outputs["logits"].AsFloats();
        var classes = logits.Length / n;
        for (var i = 0; i < n; i++)
        {
            var row = logits.AsSpan(i * classes, classes);
            var best = 0;
            for (var c = 1; c < classes; c++) if (row[c] > row[best]) best = c;
            if (best == y[start + i]) correct++;
        }
    }
    return (double)correct / y.Length;
}

int ArgValue(string name, int fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
string ArgString(string name, string fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;

static string RepoRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "OnnxTune.sln"))) return dir.FullName;
    return Directory.GetCurrentDirectory();
}
