using System.CommandLine;
using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Cli.Commands;

/// <summary>Parameter selection and loss flags shared by <c>artifacts</c> and <c>check</c>.</summary>
internal sealed class SelectionAndLossOptions
{
    public static readonly string[] LossNames = ["cross-entropy", "mse", "bce-with-logits", "l1", "none"];

    /// <summary>PyTorch's <c>CrossEntropyLoss</c> default <c>ignore_index</c>.</summary>
    public const long DefaultIgnoreIndex = -100;

    public Option<string[]> Trainable { get; } = new("--trainable")
    {
        Description = "Glob (* and ?) of float initializers to train; repeatable. Default: every float initializer.",
        HelpName = "glob",
    };

    public Option<string[]> Frozen { get; } = new("--frozen")
    {
        Description = "Glob of float initializers to keep frozen; repeatable. A glob that matches nothing is an error.",
        HelpName = "glob",
    };

    public Option<string> Loss { get; }

    public Option<string> LossOutput { get; } = new("--loss-output")
    {
        Description = "Model output the loss reads (default: the first output).",
        HelpName = "name",
    };

    public Option<string> Label { get; } = new("--label")
    {
        Description = "Name of the label input (default: labels).",
        HelpName = "name",
    };

    public Option<double?> LabelSmoothing { get; } = new("--label-smoothing")
    {
        Description = "Cross-entropy: PyTorch's label_smoothing in [0, 1] (default 0).",
        HelpName = "epsilon",
    };

    public SelectionAndLossOptions(string lossDescription)
    {
        Loss = new Option<string>("--loss") { Description = lossDescription, HelpName = string.Join("|", LossNames) };
        Loss.AcceptOnlyFromAmong(LossNames);
    }

    public void AddTo(Command command)
    {
        command.Add(Trainable);
        command.Add(Frozen);
        command.Add(Loss);
        command.Add(LossOutput);
        command.Add(Label);
        command.Add(LabelSmoothing);
    }

    public ParameterSelection Selection(ParseResult r) => new()
    {
        Trainable = r.GetValue(Trainable) ?? [],
        Frozen = r.GetValue(Frozen) ?? [],
    };

    /// <summary>The loss spec, or null when no loss flag was given and <paramref name="defaultKind"/> is null.</summary>
    public LossSpec? LossSpec(ParseResult r, LossKind? defaultKind)
    {
        var name = r.GetValue(Loss);
        LossKind? kind = name is null ? defaultKind : ParseLoss(name);
        var label = r.GetValue(Label);
        var output = r.GetValue(LossOutput);
        var smoothing = r.GetValue(LabelSmoothing);
        if (smoothing is { } eps)
        {
            if (kind != LossKind.CrossEntropy)
                throw new CliArgumentException($"--label-smoothing needs the cross-entropy loss (the loss is {(kind is null ? "not set" : LossName(kind.Value))}).");
            if (!(eps is >= 0 and <= 1))
                throw new CliArgumentException($"--label-smoothing must be in [0, 1] (got {eps}).");
        }
        if (kind is null)
        {
            if (label is not null)
                throw new CliArgumentException("--label needs a --loss that reads labels.");
            return null;
        }
        if (kind == LossKind.None && label is not null)
            throw new CliArgumentException("--label has no effect with --loss none (the model's output is the loss).");
        return new LossSpec
        {
            Kind = kind.Value,
            OutputName = output ?? "",
            LabelName = kind == LossKind.None ? null : label ?? "labels",
            IgnoreIndex = kind == LossKind.CrossEntropy ? DefaultIgnoreIndex : null,
            LabelSmoothing = smoothing ?? 0,
        };
    }

    public static LossKind ParseLoss(string name) => name switch
    {
        "cross-entropy" => LossKind.CrossEntropy,
        "mse" => LossKind.Mse,
        "bce-with-logits" => LossKind.BceWithLogits,
        "l1" => LossKind.L1,
        "none" => LossKind.None,
        _ => throw new CliArgumentException($"Unknown loss '{name}' (expected one of {string.Join(", ", LossNames)})."),
    };

    public static string LossName(LossKind kind) => kind switch
    {
        LossKind.CrossEntropy => "cross-entropy",
        LossKind.Mse => "mse",
        LossKind.BceWithLogits => "bce-with-logits",
        LossKind.L1 => "l1",
        _ => "none",
    };
}
