using System.CommandLine;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Text.Layers;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Cli.Commands;

/// <summary><c>onnxtune inspect</c>: inputs, outputs, parameters and ops (with gradient-rule status) of a model or artifacts folder.</summary>
internal static class InspectCommand
{
    public static Command Create(CliContext context)
    {
        var target = new Argument<string>("model.onnx|dir") { Description = "An ONNX model or an artifacts folder." };
        var command = new Command("inspect", "Show inputs, outputs, parameter counts and ops, and whether each op has a gradient rule.") { target };
        command.SetAction(r => OnnxTuneCli.Guard(context, () => Run(context, r.GetValue(target)!)));
        return command;
    }

    public static int Run(CliContext context, string targetPath)
    {
        var path = context.FullPath(targetPath);
        var w = context.Out;
        ArtifactManifest? manifest = null;
        string modelPath = path;
        if (Directory.Exists(path))
        {
            manifest = ArtifactManifest.Load(path);
            modelPath = Path.Combine(path, manifest.Files.InferenceModel);
        }
        var model = OnnxModelReader.Load(modelPath);
        var opset = model.OpsetImport.Where(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx").Select(o => o.Version).DefaultIfEmpty(0).Max();
        w.WriteLine($"{modelPath}");
        w.WriteLine($"  producer: {(string.IsNullOrEmpty(model.ProducerName) ? "?" : model.ProducerName)} {model.ProducerVersion}, IR {model.IrVersion}, opset {opset}");
        // Opsets 11 and 12 train as their opset-13 upgrade: report the ops (and their rules) of that graph.
        var trained = model;
        if (opset is >= 11 and < TrainingGraphBuilder.MinimumOpset)
        {
            try
            {
                trained = TrainingGraphBuilder.UpgradeOpset(model);
                w.WriteLine($"  upgraded to opset {TrainingGraphBuilder.MinimumOpset} for training (same outputs); the ops below are the upgraded graph's");
            }
            catch (UnsupportedModelException e)
            {
                w.WriteLine($"  cannot be upgraded to opset {TrainingGraphBuilder.MinimumOpset} for training: {e.Message}");
            }
        }
        else if (opset < 11)
            w.WriteLine($"  opset {opset} is too old to train (OnnxTune needs {TrainingGraphBuilder.MinimumOpset}; 11 and 12 are upgraded automatically)");
        var ruleOpset = ReferenceEquals(trained, model) ? opset : TrainingGraphBuilder.MinimumOpset;

        var initializers = model.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        w.WriteLine("inputs:");
        foreach (var i in model.Graph.Input.Where(i => !initializers.Contains(i.Name)))
            w.WriteLine($"  {Format(TrainingGraphBuilder.Spec(i))}");
        w.WriteLine("outputs:");
        foreach (var o in model.Graph.Output)
            w.WriteLine($"  {Format(TrainingGraphBuilder.Spec(o))}");

        var floats = model.Graph.Initializer.Where(t => TensorProtos.IsFloating((DataType)t.DataType)).ToList();
        long Count(TensorProto t) => t.Dims.Aggregate(1L, (a, b) => a * b);
        w.WriteLine($"parameters: {floats.Count} float initializers ({floats.Sum(Count):N0} values); {model.Graph.Initializer.Count - floats.Count} other initializers ({model.Graph.Initializer.Where(t => !floats.Contains(t)).Sum(Count):N0} values)");
        if (manifest is not null)
        {
            w.WriteLine($"  trainable: {manifest.TrainableParameters.Count} ({ArtifactsCommand.Elements(manifest.TrainableParameters):N0} values): {Names(manifest.TrainableParameters)}");
            w.WriteLine($"  frozen:    {manifest.FrozenParameters.Count} ({ArtifactsCommand.Elements(manifest.FrozenParameters):N0} values): {Names(manifest.FrozenParameters)}");
            w.WriteLine($"  loss: {SelectionAndLossOptions.LossName(manifest.Loss.Kind)} on '{manifest.Loss.OutputName}'{(manifest.Loss.LabelName is { } l ? $", labels '{l}'" : "")}");
            w.WriteLine($"  optimizer: {ArtifactsCommand.Describe(manifest.Optimizer)}");
        }

        var layerMap = EncoderLayerMap.Create(model);
        if (layerMap.LayerCount > 0 || layerMap.Assignments.Any(a => a.Block == EncoderLayerMap.Head))
        {
            var trainable = manifest?.TrainableParameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
            var shapes = floats.ToDictionary(t => t.Name, t => $"[{string.Join(", ", t.Dims)}]", StringComparer.Ordinal);
            w.WriteLine($"layers: {layerMap.LayerCount} encoder layers; parameter -> block{(trainable is null ? "" : " (T = trainable)")}:");
            var nameWidth = Math.Min(60, layerMap.Assignments.Select(a => a.Parameter.Length).DefaultIfEmpty(0).Max());
            var shapeWidth = shapes.Values.Select(v => v.Length).DefaultIfEmpty(0).Max();
            foreach (var a in layerMap.Assignments)
            {
                var mark = trainable is null ? "" : trainable.Contains(a.Parameter) ? "T " : "  ";
                var via = a.Via is null ? "" : a.InferredName is { } inferred ? $"  (via {a.Via}: {inferred})" : $"  (via {a.Via})";
                w.WriteLine($"  {mark}{a.Parameter.PadRight(nameWidth)} {shapes[a.Parameter].PadRight(shapeWidth)}  {a.Block ?? "? (not assigned)"}{via}");
            }
            var unassigned = layerMap.Assignments.Count(a => a.Block is null);
            if (unassigned > 0)
                w.WriteLine($"  {unassigned} parameter(s) could not be assigned to a block; --trainable-layers leaves them frozen.");
        }

        var registry = GradientRuleRegistry.Default;
        var ops = AllNodes(trained.Graph)
            .GroupBy(n => (Domain: n.Domain ?? "", n.OpType))
            .OrderByDescending(g => g.Count()).ThenBy(g => g.Key.OpType, StringComparer.Ordinal)
            .ToList();
        w.WriteLine($"ops: {ops.Sum(g => g.Count())} nodes, {ops.Count} op types");
        var width = Math.Max(8, ops.Select(g => Qualified(g.Key.Domain, g.Key.OpType).Length).DefaultIfEmpty(0).Max());
        var missing = 0;
        foreach (var g in ops)
        {
            var (domain, op) = g.Key;
            var status = registry.IsNonDifferentiable(domain, op) ? "non-differentiable (no gradient flows)"
                : registry.Find(domain, op, ruleOpset) is not null ? "gradient rule"
                : "NO gradient rule";
            if (status.StartsWith("NO", StringComparison.Ordinal)) missing++;
            w.WriteLine($"  {Qualified(domain, op).PadRight(width)} {g.Count(),5}  {status}");
        }
        if (missing > 0)
            w.WriteLine($"{missing} op type(s) have no gradient rule: training fails if a trainable parameter's gradient passes through them.");
        return 0;
    }

    private static IEnumerable<NodeProto> AllNodes(GraphProto graph)
    {
        foreach (var n in graph.Node)
        {
            yield return n;
            foreach (var a in n.Attribute)
            {
                if (a.G is not null)
                    foreach (var inner in AllNodes(a.G)) yield return inner;
                foreach (var sub in a.Graphs)
                    foreach (var inner in AllNodes(sub)) yield return inner;
            }
        }
    }

    private static string Qualified(string domain, string op) => string.IsNullOrEmpty(domain) ? op : $"{domain}.{op}";

    private static string Format(TensorSpec s) => $"{s.Name}: {s.ElementType}[{string.Join(", ", s.Shape)}]";

    private static string Names(IReadOnlyList<TensorSpec> specs) =>
        specs.Count == 0 ? "-" : string.Join(", ", specs.Take(10).Select(s => s.Name)) + (specs.Count > 10 ? ", ..." : "");
}
