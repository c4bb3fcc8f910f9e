using System.CommandLine;
using System.Globalization;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Lora;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Labels;
using OnnxTune.Text.Layers;
using OnnxTune.Training;
using OnnxTune.Training.Artifacts;
using OnnxTune.Training.Checkpoints;

namespace OnnxTune.Cli.Commands;

/// <summary>Task head and layer selection flags of <c>onnxtune artifacts</c>.</summary>
/// <param name="Head">Head kind, or null for none.</param>
/// <param name="LabelsFile">Label file: one label per line, or a label map JSON.</param>
/// <param name="Classes">Number of classes (regression: values).</param>
/// <param name="Pooling">mean or first.</param>
/// <param name="Dropout">Head dropout.</param>
/// <param name="TrainableLayers">Head + top k encoder layers.</param>
/// <param name="MaxLength">Tokenizer max length.</param>
/// <param name="Vocabulary">vocab.txt (default: next to the model).</param>
/// <param name="Cased">Do not lower-case.</param>
/// <param name="Seed">Seed of the head's initial weights.</param>
internal sealed record HeadSettings(string? Head = null, string? LabelsFile = null, int? Classes = null, string? Pooling = null, float? Dropout = null,
    int? TrainableLayers = null, int? MaxLength = null, string? Vocabulary = null, bool Cased = false, int? Seed = null);

/// <summary><c>onnxtune artifacts</c>: training, eval and optimizer graphs, manifest and initial checkpoint.</summary>
internal static class ArtifactsCommand
{
    /// <summary>Checkpoint user property holding the artifacts folder a checkpoint belongs to.</summary>
    public const string ArtifactsProperty = ArtifactGenerator.ArtifactsProperty;

    public static Command Create(CliContext context)
    {
        var model = new Argument<string>("model.onnx") { Description = "Inference model (opset 13 or newer; opsets 11 and 12 are upgraded to 13)." };
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
        var head = new Option<string>("--head") { Description = "Put a task head on the encoder's token states [batch, sequence, hidden] (output 'logits', or 'predictions' for regression).", HelpName = "classification|token-classification|regression" };
        head.AcceptOnlyFromAmong("classification", "token-classification", "regression");
        var labels = new Option<string>("--labels") { Description = "Class names: one per line, or a label map JSON ({\"labels\": [...]}); index = position.", HelpName = "file" };
        var classes = new Option<int?>("--classes") { Description = "Number of classes (regression: predicted values, default 1); data labels are then class indices.", HelpName = "n" };
        var pooling = new Option<string>("--pooling") { Description = "Sequence pooling of classification/regression heads (default mean, under the attention mask).", HelpName = "mean|first" };
        pooling.AcceptOnlyFromAmong("mean", "first");
        var dropout = new Option<float?>("--dropout") { Description = "Dropout before the head's linear layer, training graph only (default 0.1).", HelpName = "p" };
        var layers = new Option<int?>("--trainable-layers") { Description = "Train the head plus the top k encoder layers only (combines with --trainable/--frozen).", HelpName = "k" };
        var maxLength = new Option<int?>("--max-length") { Description = "Longest token sequence for text data, [CLS]/[SEP] included (default 128).", HelpName = "n" };
        var vocab = new Option<string>("--vocab") { Description = "WordPiece vocab.txt for text data (default: vocab.txt next to the model); copied into the artifacts.", HelpName = "file" };
        var cased = new Option<bool>("--cased") { Description = "Do not lower-case text (cased vocabularies)." };
        var seed = new Option<int?>("--seed") { Description = "Seed of the head's initial weights (default 0).", HelpName = "n" };
        var lora = new Option<string[]>("--lora") { Description = "Glob of MatMul/Gemm weights to adapt with LoRA (PEFT: W.lora_A [r, in], W.lora_B [out, r]; W frozen); repeatable. The base model is then frozen except what --trainable names.", HelpName = "glob" };
        var loraRank = new Option<int?>("--lora-rank") { Description = "LoRA rank r (default 8).", HelpName = "r" };
        var loraAlpha = new Option<double?>("--lora-alpha") { Description = "LoRA alpha; the branch is scaled by alpha / r (default 2r).", HelpName = "a" };
        var loraDropout = new Option<double?>("--lora-dropout") { Description = "Dropout on the adapter input, training graph only (default 0).", HelpName = "p" };
        var loraSeed = new Option<int?>("--lora-seed") { Description = "Seed of the lora_A initialisation (default 0).", HelpName = "n" };

        var command = new Command("artifacts", "Build training artifacts (training/eval/optimizer graphs, manifest, initial checkpoint) from an inference model.")
        {
            model, output,
        };
        shared.AddTo(command);
        foreach (var o in new Option[] { optimizer, lr, wd, momentum, beta1, beta2, eps, clip, head, labels, classes, pooling, dropout, layers, maxLength, vocab, cased, seed, lora, loraRank, loraAlpha, loraDropout, loraSeed }) command.Add(o);
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
            var headSettings = new HeadSettings(r.GetValue(head), r.GetValue(labels), r.GetValue(classes), r.GetValue(pooling), r.GetValue(dropout),
                r.GetValue(layers), r.GetValue(maxLength), r.GetValue(vocab), r.GetValue(cased), r.GetValue(seed));
            var explicitLoss = r.GetValue(shared.Loss) is not null;
            var loraGlobs = r.GetValue(lora) ?? [];
            LoraOptions? loraOptions = null;
            if (loraGlobs.Length > 0)
                loraOptions = new LoraOptions
                {
                    Targets = loraGlobs,
                    Rank = r.GetValue(loraRank) ?? LoraOptions.DefaultRank,
                    Alpha = r.GetValue(loraAlpha),
                    Dropout = r.GetValue(loraDropout) ?? 0,
                    Seed = r.GetValue(loraSeed) ?? 0,
                };
            else
                foreach (var o in new Option[] { loraRank, loraAlpha, loraDropout, loraSeed })
                    if (r.GetResult(o) is not null) throw new CliArgumentException($"{o.Name} needs --lora <glob>.");
            var options = new ArtifactOptions
            {
                Selection = shared.Selection(r),
                Loss = shared.LossSpec(r, LossKind.CrossEntropy)!,
                Optimizer = spec,
                Lora = loraOptions,
            };
            return Run(context, r.GetValue(model)!, r.GetValue(output)!, options, headSettings, explicitLoss);
        }));
        return command;
    }

    /// <summary>Builds and writes the artifacts and the initial checkpoint; prints a summary.</summary>
    public static int Run(CliContext context, string modelPath, string outDir, ArtifactOptions options, HeadSettings? head = null, bool explicitLoss = true)
    {
        head ??= new HeadSettings();
        var source = context.FullPath(modelPath);
        var dir = context.FullPath(outDir);
        // An opset-11/12 model is upgraded first: the task head and the artifacts use opset-13 forms, and the
        // artifacts' inference model (served and exported) is the upgraded one. The manifest hashes the file given.
        var model = CheckCommand.UpgradedModel(context, OnnxModelReader.Load(source));
        var w = context.Out;
        CheckHeadFlags(head);

        LabelMap? labelMap = null;
        string? vocabPath = null;
        TextModelSettings? text = null;
        if (head.Head is { } headName)
        {
            var kind = TextModelSettings.ParseKind(headName);
            labelMap = head.LabelsFile is { } lf ? ReadLabels(context.FullPath(lf)) : null;
            if (kind == TaskHeadKind.Regression && labelMap is not null)
                throw new CliArgumentException("--labels does not apply to --head regression; give the number of predicted values with --classes (default 1).");
            var outputs = labelMap?.Count ?? head.Classes ?? (kind == TaskHeadKind.Regression ? 1
                : throw new CliArgumentException($"--head {headName} needs --labels <file> or --classes <n>."));
            if (labelMap is not null && head.Classes is { } n && n != labelMap.Count)
                throw new CliArgumentException($"--classes {n} disagrees with --labels, which lists {labelMap.Count} labels.");
            var built0 = TaskHeadBuilder.Build(model, new TaskHeadOptions
            {
                Kind = kind,
                Outputs = outputs,
                Pooling = head.Pooling == "first" ? HeadPooling.First : HeadPooling.Mean,
                Dropout = head.Dropout ?? TaskHeadOptions.DefaultDropout,
                Seed = head.Seed ?? 0,
            });
            model = built0.Model;
            if (!explicitLoss)
            {
                if (options.Loss.LabelSmoothing != 0 && built0.Loss.Kind != LossKind.CrossEntropy)
                    throw new CliArgumentException($"--label-smoothing needs the cross-entropy loss; --head {headName} trains with {SelectionAndLossOptions.LossName(built0.Loss.Kind)}.");
                options = options with { Loss = built0.Loss with { LabelSmoothing = options.Loss.LabelSmoothing } };
            }
            vocabPath = head.Vocabulary is { } v ? context.FullPath(v) : Path.Combine(Path.GetDirectoryName(source)!, "vocab.txt");
            if (!File.Exists(vocabPath))
            {
                if (head.Vocabulary is not null) throw new CliArgumentException($"--vocab '{vocabPath}' does not exist.");
                w.WriteLine($"note: no vocab.txt next to the model; the artifacts cannot read text data (pass --vocab to record a tokenizer).");
                vocabPath = null;
            }
            text = new TextModelSettings
            {
                Kind = kind,
                Outputs = outputs,
                Pooling = built0.Options.Pooling,
                Dropout = built0.Options.Dropout,
                OutputName = built0.OutputName,
                LabelsFile = labelMap is null ? null : "labels.json",
                VocabularyFile = vocabPath is null ? null : "vocab.txt",
                MaxLength = head.MaxLength ?? 128,
                LowerCase = !head.Cased,
                TrainableLayers = head.TrainableLayers,
            };
            options = options with { Properties = new Dictionary<string, string>(options.Properties.Concat(text.ToProperties())) };
        }

        // On a BERT-style encoder, selection goes through the layer map: --trainable-layers picks whole blocks, and
        // globs also match the inferred names of unnamed weights (927 is encoder.layer.0.attention.self.query.weight).
        EncoderLayerMap? layerMap = EncoderLayerMap.Create(model);
        if (layerMap.LayerCount == 0)
        {
            if (head.TrainableLayers is not null)
                throw new CliArgumentException("--trainable-layers needs a BERT-style encoder (parameters named like encoder.layer.<i>.*); this model has none.");
            layerMap = null;
        }
        else if (options.Lora is { } lora)
        {
            // LoRA: the adapters train; of the base model only what --trainable-layers / --trainable name.
            var names = new HashSet<string>(StringComparer.Ordinal);
            if (head.TrainableLayers is { } layers) names.UnionWith(layerMap.HeadAndTopLayers(layers));
            foreach (var g in options.Selection.Trainable) names.UnionWith(layerMap.Match(g, "--trainable"));
            foreach (var g in options.Selection.Frozen) names.ExceptWith(layerMap.Match(g, "--frozen"));
            var targets = lora.Targets.SelectMany(g => layerMap.Match(g, "--lora")).Concat(lora.TargetNames).Distinct(StringComparer.Ordinal).ToList();
            options = options with
            {
                Selection = new ParameterSelection { TrainableNames = layerMap.Assignments.Select(a => a.Parameter).Where(names.Contains).ToList() },
                Lora = lora with { Targets = [], TargetNames = targets },
            };
            if (head.Head is null && head.TrainableLayers is { } k)
                options = options with { Properties = new Dictionary<string, string>(options.Properties) { [TextModelSettings.TrainableLayersKey] = k.ToString(CultureInfo.InvariantCulture) } };
        }
        else
        {
            var names = layerMap.Select(head.TrainableLayers, options.Selection.Trainable, options.Selection.Frozen);
            options = options with { Selection = new ParameterSelection { TrainableNames = names } };
            if (head.Head is null && head.TrainableLayers is { } k)
                options = options with { Properties = new Dictionary<string, string>(options.Properties) { [TextModelSettings.TrainableLayersKey] = k.ToString(CultureInfo.InvariantCulture) } };
        }

        var built = head.Head is not null
            ? TaskHeadArtifacts.Build(model, options)
            : ArtifactBuilder.Build(model, options, ArtifactBuilder.FileSha256(source));
        ArtifactGenerator.Save(built, dir); // graphs, manifest and the initial checkpoint
        if (labelMap is not null) labelMap.Save(Path.Combine(dir, "labels.json"));
        if (vocabPath is not null && Path.GetFullPath(vocabPath) != Path.GetFullPath(Path.Combine(dir, "vocab.txt")))
            File.Copy(vocabPath, Path.Combine(dir, "vocab.txt"), overwrite: true);

        var m = built.Manifest;
        w.WriteLine($"artifacts written to {dir}");
        if (text is not null)
            w.WriteLine($"  head: {TextModelSettings.KindName(text.Kind)}, {text.Outputs} output(s) '{text.OutputName}'{(text.Kind == TaskHeadKind.TokenClassification ? "" : $", {(text.Pooling == HeadPooling.Mean ? "mean" : "first-token")} pooling")}, dropout {text.Dropout.ToString(CultureInfo.InvariantCulture)}{(labelMap is null ? "" : $", label map labels.json ({labelMap.Count} labels)")}{(text.VocabularyFile is null ? "" : $", tokenizer vocab.txt max length {text.MaxLength}{(text.LowerCase ? " lower-case" : " cased")}")}");
        if (layerMap is not null)
        {
            var trainable = m.TrainableParameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
            var blocks = layerMap.Assignments.Where(a => trainable.Contains(a.Parameter)).Select(a => a.Block ?? "?").Distinct().ToList();
            w.WriteLine($"  trainable blocks: {string.Join(", ", blocks)} (of {layerMap.LayerCount} encoder layers)");
        }
        if (m.Lora is { } adapters)
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  lora: {adapters.Weights.Count} weight(s), rank {adapters.Rank}, alpha {adapters.Alpha:G6} (scale {adapters.Scale:G6}), dropout {adapters.Dropout:G6}: {string.Join(", ", adapters.Weights.Take(6).Select(x => x.Weight))}{(adapters.Weights.Count > 6 ? ", ..." : "")}"));
        w.WriteLine($"  trainable parameters: {m.TrainableParameters.Count} ({Elements(m.TrainableParameters):N0} values)");
        w.WriteLine($"  frozen parameters:    {m.FrozenParameters.Count} ({Elements(m.FrozenParameters):N0} values)");
        w.WriteLine($"  loss: {SelectionAndLossOptions.LossName(m.Loss.Kind)} on '{m.Loss.OutputName}'{(m.Loss.LabelName is { } l ? $", labels '{l}' ({m.Loss.LabelElementType})" : "")}{(m.Loss.IgnoreIndex is { } ig ? $", ignore index {ig}" : "")}");
        w.WriteLine($"  optimizer: {Describe(m.Optimizer)}");
        w.WriteLine($"  graph nodes: inference {model.Graph.Node.Count}, training {built.Training.Graph.Node.Count}, eval {built.Eval.Graph.Node.Count}, optimizer {built.Optimizer.Graph.Node.Count} (opset {m.Opset})");
        return 0;
    }

    private static void CheckHeadFlags(HeadSettings h)
    {
        if (h.Head is null)
        {
            var stray = new (object? Value, string Flag)[] { (h.LabelsFile, "--labels"), (h.Classes, "--classes"), (h.Pooling, "--pooling"), (h.Dropout, "--dropout"), (h.MaxLength, "--max-length"), (h.Vocabulary, "--vocab"), (h.Seed, "--seed") }
                .FirstOrDefault(x => x.Value is not null).Flag;
            if (stray is not null) throw new CliArgumentException($"{stray} needs --head.");
            if (h.Cased) throw new CliArgumentException("--cased needs --head.");
        }
        if (h.Classes is < 1) throw new CliArgumentException($"--classes must be at least 1 (got {h.Classes}).");
        if (h.MaxLength is < 2) throw new CliArgumentException($"--max-length must be at least 2 (got {h.MaxLength}).");
        if (h.TrainableLayers is < 0) throw new CliArgumentException($"--trainable-layers must be 0 or more (got {h.TrainableLayers}).");
        if (h.Dropout is { } d && !(d >= 0 && d < 1)) throw new CliArgumentException($"--dropout must be in [0, 1) (got {d}).");
        if (h.Pooling is not null && h.Head == "token-classification") throw new CliArgumentException("--pooling does not apply to --head token-classification (it predicts per token).");
    }

    /// <summary>A label map JSON (starts with '{') or a plain list, one label per line (blank lines skipped).</summary>
    internal static LabelMap ReadLabels(string path)
    {
        if (!File.Exists(path)) throw new CliArgumentException($"--labels file '{path}' does not exist.");
        var content = File.ReadAllText(path);
        if (content.TrimStart().StartsWith('{')) return LabelMap.Load(path);
        var names = content.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
        if (names.Count == 0) throw new CliArgumentException($"--labels file '{path}' lists no labels.");
        return new LabelMap(names);
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
