using System.CommandLine;
using System.Globalization;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Gradients;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Training.GradientChecking;

namespace OnnxTune.Cli.Commands;

/// <summary><c>onnxtune check</c>: generated gradients against central finite differences of the forward graph.</summary>
internal static class CheckCommand
{
    /// <summary>Every gradient matches.</summary>
    public const int Passed = 0;

    /// <summary>At least one parameter's gradient does not match.</summary>
    public const int Mismatch = 1;

    /// <summary>The model cannot be differentiated (or read): no rule for an op, an unsupported opset, bad file.</summary>
    public const int NotDifferentiable = 2;

    public static Command Create(CliContext context)
    {
        var model = new Argument<string>("model.onnx") { Description = "Inference model to check." };
        var shared = new SelectionAndLossOptions("Loss to differentiate (default: sum(output * R) for a fixed random R; 'none' does the same).");
        var seed = new Option<int?>("--seed") { Description = "Seed of the random inputs, labels, R and sampled elements (default 0).", HelpName = "n" };
        var dims = new Option<string[]>("--dim") { Description = "Value of a symbolic dim, e.g. --dim batch=3 (repeatable; default 2, and a batch dim large enough for every BatchNormalization to normalise 8 values per channel).", HelpName = "name=value" };
        var layers = new Option<int?>("--trainable-layers") { Description = "Check the head plus the top k encoder layers only (BERT-style encoders; combines with --trainable/--frozen).", HelpName = "k" };
        var command = new Command("check", "Compare the generated gradients with central finite differences on random inputs.") { model, seed, dims, layers };
        shared.AddTo(command);
        command.SetAction(r => OnnxTuneCli.Guard(context, () =>
        {
            var loss = shared.LossSpec(r, null);
            var options = new GradientCheckOptions
            {
                Selection = shared.Selection(r),
                Loss = loss is { Kind: Autodiff.Artifacts.LossKind.None } ? null : loss,
                Seed = r.GetValue(seed) ?? 0,
                DimValues = ParseDims(r.GetValue(dims) ?? []),
            };
            return Run(context, r.GetValue(model)!, options, r.GetValue(layers));
        }, _ => NotDifferentiable));
        return command;
    }

    public static int Run(CliContext context, string modelPath, GradientCheckOptions options, int? trainableLayers = null)
    {
        var path = context.FullPath(modelPath);
        var model = UpgradedModel(context, OnnxModelReader.Load(path));
        // As in 'artifacts': on a BERT-style encoder, globs also match the inferred names of unnamed weights
        // (927 is encoder.layer.0.attention.self.query.weight) and --trainable-layers picks whole blocks.
        var layerMap = OnnxTune.Text.Layers.EncoderLayerMap.Create(model);
        if (layerMap.LayerCount > 0)
            options = options with { Selection = new Autodiff.Artifacts.ParameterSelection { TrainableNames = layerMap.Select(trainableLayers, options.Selection.Trainable, options.Selection.Frozen) } };
        else if (trainableLayers is not null)
            throw new CliArgumentException("--trainable-layers needs a BERT-style encoder (parameters named like encoder.layer.<i>.*); this model has none.");
        var dropouts = NeutraliseDropout(model);
        if (dropouts > 0)
            context.Out.WriteLine($"note: {dropouts} Dropout node(s) checked with ratio 0 (identity): a random mask would change between the finite-difference runs.");
        GradientCheckReport report;
        try
        {
            report = GradientChecker.Check(model, options);
        }
        catch (GradientNotDefinedException e)
        {
            context.Error.WriteLine($"error: cannot differentiate {Path.GetFileName(path)}: op {e.OpType} (node '{e.NodeName}') has no gradient rule. {e.Message}");
            return NotDifferentiable;
        }
        var w = context.Out;
        var nameWidth = Math.Max(9, report.Parameters.Select(p => p.Name.Length).DefaultIfEmpty(0).Max());
        var dims = report.DimValues.Count == 0 ? "" : ", " + string.Join(", ", report.DimValues.Select(d => $"{d.Key}={d.Value}"));
        w.WriteLine($"gradient check of {Path.GetFileName(path)}: {(report.DoublePrecision ? "float64" : "float32")}, tolerance {F(report.Tolerance)} (absolute {F(report.AbsoluteTolerance)}), seed {report.Seed}{dims}, loss {F(report.Loss)}");
        w.WriteLine($"  {"parameter".PadRight(nameWidth)}  {"max rel err",12}  {"max abs err",12}  {"checked",7}  result");
        foreach (var p in report.Parameters)
            w.WriteLine($"  {p.Name.PadRight(nameWidth)}  {F(p.MaxRelativeError),12}  {F(p.MaxAbsoluteError),12}  {p.ElementsChecked,7}  {(p.Passed ? "ok" : "MISMATCH")}");
        var failed = report.Parameters.Count(p => !p.Passed);
        w.WriteLine(failed == 0
            ? $"all {report.Parameters.Count} parameters pass"
            : $"{failed} of {report.Parameters.Count} parameters MISMATCH");
        return failed == 0 ? Passed : Mismatch;
    }

    /// <summary>
    /// Sets the ratio of every Dropout to a constant 0, so the training-mode graph is deterministic and equals the
    /// rest of the model's function; the mask output is then all true. Returns the number of Dropout nodes.
    /// </summary>
    /// <summary>The model as the graph builders train it: opsets 11 and 12 upgraded to 13 (with a note), others as they are.</summary>
    internal static ModelProto UpgradedModel(CliContext context, ModelProto model)
    {
        var upgraded = TrainingGraphBuilder.UpgradeOpset(model);
        if (!ReferenceEquals(upgraded, model))
        {
            var from = model.OpsetImport.First(o => string.IsNullOrEmpty(o.Domain) || o.Domain == "ai.onnx").Version;
            context.Out.WriteLine($"note: the model uses opset {from}; it is upgraded to opset {TrainingGraphBuilder.MinimumOpset} (same outputs) before training.");
        }
        return upgraded;
    }

    internal static int NeutraliseDropout(ModelProto model)
    {
        var nodes = model.Graph.Node.Where(n => n.OpType == "Dropout" && string.IsNullOrEmpty(n.Domain)).ToList();
        if (nodes.Count == 0) return 0;
        var taken = model.Graph.Node.SelectMany(n => n.Output).Concat(model.Graph.Input.Select(i => i.Name))
            .Concat(model.Graph.Initializer.Select(t => t.Name)).ToHashSet(StringComparer.Ordinal);
        var name = "onnxtune_check_dropout_ratio_zero";
        while (taken.Contains(name)) name += "_";
        // A Constant node, not an initializer, so the default selection does not take it for a parameter.
        var constant = new NodeProto { OpType = "Constant", Name = name };
        constant.Output.Add(name);
        constant.Attribute.Add(Attr.Tensor("value", TensorProtos.Float(name, [0f])));
        model.Graph.Node.Insert(0, constant);
        var replaced = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in nodes)
        {
            while (n.Input.Count < 2) n.Input.Add("");
            if (n.Input[1].Length > 0) replaced.Add(n.Input[1]);
            n.Input[1] = name;
        }
        // Drop the old ratio constants nothing reads any more (ONNX Runtime warns about them otherwise).
        var used = model.Graph.Node.SelectMany(n => n.Input).Concat(model.Graph.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
        foreach (var dead in model.Graph.Node.Where(n => n.OpType == "Constant" && n.Output.Count == 1 && replaced.Contains(n.Output[0]) && !used.Contains(n.Output[0])).ToList())
            model.Graph.Node.Remove(dead);
        return nodes.Count;
    }

    internal static Dictionary<string, long> ParseDims(IEnumerable<string> specs)
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var s in specs)
        {
            var eq = s.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || !long.TryParse(s.AsSpan(eq + 1), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < 1)
                throw new CliArgumentException($"--dim '{s}' is not name=value with a positive integer value (e.g. --dim batch=3).");
            result[s[..eq]] = v;
        }
        return result;
    }

    private static string F(double v) => v.ToString("0.###e+0", CultureInfo.InvariantCulture);
}
