// A fresh app that installs OnnxTune from packages (PackagingTests builds and runs it outside the repository):
// artifacts from a small model, AddOnDeviceFineTuning, feedback, one fine-tuning round, its gate decision.
// Usage: App <model.onnx> <work folder>
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Hosting;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.Artifacts;

var (modelPath, work) = (args[0], args[1]);
var artifactsPath = Path.Combine(work, "artifacts");

// Offline step: training artifacts for the model (an MLP 8 → 16 → 4 exported from PyTorch; output "logits").
ArtifactGenerator.Generate(OnnxModelReader.Load(modelPath), new ArtifactOptions
{
    Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits" },
    Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 1e-2 },
}, artifactsPath);

var builder = Host.CreateApplicationBuilder();
builder.Services.AddOnDeviceFineTuning("mlp", o =>
{
    o.ArtifactsPath = artifactsPath;
    o.ModelStorePath = Path.Combine(work, "store");
    o.MinNewFeedback = 100;
    o.CheckInterval = TimeSpan.FromSeconds(1);
    o.EpochsPerRound = 3;
});
using var host = builder.Build();

var decided = new TaskCompletionSource<RoundCompletedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
host.Services.GetRequiredService<FineTuningEvents>().RoundCompleted += (_, e) => decided.TrySetResult(e);
await host.StartAsync();

var handle = host.Services.GetRequiredKeyedService<IModelHandle>("mlp");
var writer = host.Services.GetRequiredKeyedService<IFeedbackWriter>("mlp");
Console.WriteLine($"serving before: version {handle.ServingVersion?.ToString() ?? "base"}");

// Separable feedback: class k has features 2k and 2k+1 near 3, the rest near 0.
var rng = new Random(7);
for (var i = 0; i < 240; i++)
{
    var label = i % 4;
    var x = new float[8];
    for (var j = 0; j < 8; j++) x[j] = (j / 2 == label ? 3f : 0f) + (float)(rng.NextDouble() - 0.5);
    await writer.WriteAsync(Feedback.ForTensors(new Dictionary<string, TensorData> { ["x"] = TensorData.Float(x, 1, 8) }, label, userId: $"user{i % 12}"));
}

var finished = await Task.WhenAny(decided.Task, Task.Delay(TimeSpan.FromSeconds(120)));
await host.StopAsync();
if (finished != decided.Task)
{
    Console.WriteLine("no round completed within 120 s");
    return 2;
}
var round = decided.Task.Result;
Console.WriteLine($"round {round.Round}: {round.Outcome} in {round.Duration.TotalSeconds:F1} s");
if (round.Error is not null) Console.WriteLine($"error: {round.Error}");
if (round.Decision is { } d)
    Console.WriteLine($"decision: promoted={d.Promoted} train_loss={d.TrainLoss:F4} checks={string.Join(", ", d.Checks.Select(c => $"{c.Gate}:{(c.Passed ? "pass" : "fail")}"))}");
Console.WriteLine($"serving after: version {handle.ServingVersion?.ToString() ?? "base"}");
return round.Outcome == RoundOutcome.Failed ? 1 : 0;
