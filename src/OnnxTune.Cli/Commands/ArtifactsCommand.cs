using System.CommandLine;
using System.Globalization;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Cli.Commands;

/// <summary><c>onnxtune artifacts</c>: training, eval and optimizer graphs, manifest and initial checkpoint.</summary>
internal static class ArtifactsCommand
{
    /// <summary>Checkpoint user property holding the artifacts folder a checkpoint belongs to.</summary>
    public const string ArtifactsProperty = "onnxtune.artifacts";

    public static Command Create(CliContext context)
    {
        var model = new Argument<string>("model.onnx") { Description = "Inference model (opset 13 or newer)." };
        var output = new Option<string>("--out") { Description = "Artifacts folder to write.", Required = true, HelpName = "dir" };
        var shared = new SelectionAndLossOptions("Loss (default cross-entropy, ignore index -100 like PyTorch).");
        var optimizer = new Option<string>("--optimizer") { Description = "Optimizer (default adamw).", HelpName = "adamw|sgd" };
        optimizer.AcceptOnlyFromAmong("adamw", "sgd");
        var lr = Num("--lr", "Learning rate (default 1e-3).");
        var wd = Num("--weight-decay", "Weight decay: decoupled for AdamW (default 0.01), L2 on the gradient for SGD (default 0).");
        var momentum = Num("--momentum", "SGD momentum (default 0).");
        var beta1 = Num("--beta1", "AdamW beta1 (default 0.9).");
        var beta2 = Num("--beta2", "AdamW beta2 (default 0.999).");
        var eps = Num("--eps", "AdamW epsilon (default 1e-8).");
        var clip = Num("--max-grad-norm", "Clip gradients to this global L2 norm before each update (default: no clipping).");

        var command = new Command("artifacts", "Build training artifacts (training/eval/optimizer graphs, manifest, initial checkpoint) from an inference model.")
        {
            model, output,
        };
        shared.AddTo(command);
        foreach (var o in new Option[] { optimizer, lr, wd, momentum, beta1, beta2, eps, clip }) command.Add(o);
        command.SetAction(r => OnnxTuneCli.Guard(context, () =>
        {
            var kind = r.GetValue(optimizer) == "sgd" ? OptimizerKind.Sgd : OptimizerKind.AdamW;
            if (kind == OptimizerKind.Sgd)
                RejectFor("sgd", r, beta1, beta2, eps);
            else
                RejectFor("adamw", r, momentum);
            var spec = new OptimizerSpec
            {
                Kind = kind,
                LearningRate = r.GetValue(lr) ?? 1e-3,
                WeightDecay = r.GetValue(wd) ?? (kind == OptimizerKind.AdamW ? 0.01 : 0.0),
                Momentum = r.GetValue(momentum) ?? 0.0,
                Beta1 = r.GetValue(beta1) ?? 0.9,
                Beta2 = r.GetValue(beta2) ?? 0.999,
                Epsilon = r.GetValue(eps) ?? 1e-8,
                MaxGradNorm = r.GetValue(clip),
            };
            var options = new ArtifactOptions
            {
                Selection = shared.Selection(r),
                Loss = shared.LossSpec(r, LossKind.CrossEntropy)!,
                Optimizer = spec,
            };
            return Run(context, r.GetValue(model)!, r.GetValue(output)!, options);
        }));
        return command;
    }

    /// <summary>Builds and writes the artifacts and the initial checkpoint; prints a summary.</summary>
    public static int Run(CliContext context, string modelPath, string outDir, ArtifactOptions options)
    {
        var source = context.FullPath(modelPath);
        var dir = context.FullPath(outDir);
        var model = OnnxModelReader.Load(source);
        var built = ArtifactBuilder.Build(model, options, (p, spec, opset) => OptimizerGraphBuilder.Build(p, spec, opset), ArtifactBuilder.FileSha256(source));
        ArtifactBuilder.Save(built, dir);

        // A checkpoint left by an earlier run in the same folder would be loaded instead of the model's weights.
        var checkpoint = Path.Combine(dir, built.Manifest.Files.Checkpoint);
        if (Directory.Exists(checkpoint))
        {
            File.Delete(Path.Combine(checkpoint, CheckpointStore.MetadataFileName));
            File.Delete(Path.Combine(checkpoint, CheckpointStore.TensorsFileName));
        }
        using (var session = TrainingSession.Open(dir))
            session.SaveCheckpoint(checkpoint, new Dictionary<string, string> { [ArtifactsProperty] = dir });

        var m = built.Manifest;
        var w = context.Out;
        w.WriteLine($"artifacts written to {dir}");
        w.WriteLine($"  trainable parameters: {m.TrainableParameters.Count} ({Elements(m.TrainableParameters):N0} values)");
        w.WriteLine($"  frozen parameters:    {m.FrozenParameters.Count} ({Elements(m.FrozenParameters):N0} values)");
        w.WriteLine($"  loss: {SelectionAndLossOptions.LossName(m.Loss.Kind)} on '{m.Loss.OutputName}'{(m.Loss.LabelName is { } l ? $", labels '{l}' ({m.Loss.LabelElementType})" : "")}{(m.Loss.IgnoreIndex is { } ig ? $", ignore index {ig}" : "")}");
        w.WriteLine($"  optimizer: {Describe(m.Optimizer)}");
        w.WriteLine($"  graph nodes: inference {model.Graph.Node.Count}, training {built.Training.Graph.Node.Count}, eval {built.Eval.Graph.Node.Count}, optimizer {built.Optimizer.Graph.Node.Count} (opset {m.Opset})");
        return 0;
    }

    internal static long Elements(IEnumerable<TensorSpec> specs) =>
        specs.Sum(s => s.FixedDims.Aggregate(1L, (a, b) => a * Math.Max(b, 1)));

    internal static string Describe(OptimizerSpec o)
    {
        static string F(double v) => v.ToString("G6", CultureInfo.InvariantCulture);
        var clip = o.MaxGradNorm is { } c ? $", max_grad_norm {F(c)}" : "";
        return o.Kind == OptimizerKind.AdamW
            ? $"adamw lr {F(o.LearningRate)}, betas ({F(o.Beta1)}, {F(o.Beta2)}), eps {F(o.Epsilon)}, weight_decay {F(o.WeightDecay)}{clip}"
            : $"sgd lr {F(o.LearningRate)}, momentum {F(o.Momentum)}, weight_decay {F(o.WeightDecay)}{clip}";
    }

    private static Option<double?> Num(string name, string description) => new(name) { Description = description, HelpName = "x" };

    private static void RejectFor(string optimizer, ParseResult r, params Option<double?>[] options)
    {
        foreach (var o in options)
            if (r.GetResult(o) is not null)
                throw new CliArgumentException($"{o.Name} does not apply to --optimizer {optimizer}.");
    }
}
