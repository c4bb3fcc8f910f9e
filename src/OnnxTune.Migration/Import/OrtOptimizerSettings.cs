using Onnx;
using OnnxTune.Autodiff.Artifacts;

namespace OnnxTune.Migration.Import;

/// <summary>How an ORT optimizer model maps onto OnnxTune.</summary>
/// <param name="Spec">The OnnxTune optimizer (PyTorch semantics) with ORT's hyper-parameters.</param>
/// <param name="HuggingFaceAdamW">ORT's <c>adam_mode = 1</c> (its default): the update of HuggingFace's AdamW, which the
/// import writes as its own optimizer graph (OnnxTune's fused kernel runs only PyTorch's AdamW).</param>
/// <param name="CorrectBias">HuggingFace mode: bias correction of the step size.</param>
/// <param name="Description">What was found, for the import report.</param>
public sealed record OrtOptimizerSettings(OptimizerSpec Spec, bool HuggingFaceAdamW, bool CorrectBias, string Description)
{
    /// <summary>Reads the <c>com.microsoft</c> AdamWOptimizer or SGDOptimizerV2 node of an ORT optimizer model.</summary>
    /// <exception cref="OrtImportException">No or several optimizer nodes, an unknown optimizer op, or settings without an exact mapping.</exception>
    public static OrtOptimizerSettings Read(ModelProto model, string file, double learningRate)
    {
        var nodes = model.Graph.Node.Where(n => n.Domain == "com.microsoft" && n.OpType is "AdamWOptimizer" or "SGDOptimizerV2" or "SGDOptimizer" or "AdamOptimizer" or "LambOptimizer").ToList();
        if (nodes.Count != 1)
        {
            var ops = string.Join(", ", model.Graph.Node.Select(n => $"{(n.Domain.Length == 0 ? "" : n.Domain + ".")}{n.OpType}").Distinct());
            throw new OrtImportException(OrtImportErrorKind.UnmappableOptimizer, file,
                $"{file}: expected one com.microsoft AdamWOptimizer or SGDOptimizerV2 node (what ORT's generate_artifacts writes); found {(nodes.Count == 0 ? "none" : nodes.Count.ToString())} among: {ops}.");
        }
        var node = nodes[0];
        var attrs = node.Attribute.ToDictionary(a => a.Name, StringComparer.Ordinal);
        float F(string name, float fallback) => attrs.TryGetValue(name, out var a) ? a.F : fallback;
        long I(string name, long fallback) => attrs.TryGetValue(name, out var a) ? a.I : fallback;
        switch (node.OpType)
        {
            case "SGDOptimizerV2":
                if (attrs.Count > 0)
                    throw Unmappable(file, $"SGDOptimizerV2.{attrs.Keys.First()}", $"{file}: SGDOptimizerV2 has attribute '{attrs.Keys.First()}', which ORT's plain SGD does not define.");
                return new OrtOptimizerSettings(new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = learningRate, WeightDecay = 0 }, false, false,
                    "SGDOptimizerV2 → torch.optim.SGD (no momentum, no weight decay)");
            case "AdamWOptimizer":
                // ORT's contrib-op defaults (onnxruntime/core/graph/training_op_defs.cc).
                double beta1 = F("alpha", 0.9f), beta2 = F("beta", 0.999f), eps = F("epsilon", 1e-8f), wd = F("weight_decay", 0f);
                var mode = I("adam_mode", 0);
                var correct = I("correct_bias", 1);
                foreach (var known in attrs.Keys.Except(["alpha", "beta", "epsilon", "weight_decay", "adam_mode", "correct_bias"]))
                    throw Unmappable(file, $"AdamWOptimizer.{known}", $"{file}: AdamWOptimizer attribute '{known}' is not one the importer knows how to map.");
                // The float attributes are float32: keep their exact value (0.999f is 0.99900001287...).
                var spec = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = learningRate, Beta1 = beta1, Beta2 = beta2, Epsilon = eps, WeightDecay = wd };
                var settings = $"alpha={beta1:R} beta={beta2:R} epsilon={eps:R} weight_decay={wd:R} adam_mode={mode} correct_bias={correct}";
                return mode switch
                {
                    0 when correct == 1 => new OrtOptimizerSettings(spec, false, true, $"AdamWOptimizer({settings}) → torch.optim.AdamW"),
                    0 => throw Unmappable(file, "AdamWOptimizer.correct_bias",
                        $"{file}: AdamWOptimizer has adam_mode=0 (PyTorch) with correct_bias=0; PyTorch's AdamW always corrects the bias, so this update has no exact OnnxTune equivalent."),
                    1 => new OrtOptimizerSettings(spec, true, correct == 1, $"AdamWOptimizer({settings}) → HuggingFace AdamW graph (eps outside the bias correction, weight decay after the step)"),
                    _ => throw Unmappable(file, "AdamWOptimizer.adam_mode", $"{file}: AdamWOptimizer adam_mode={mode} is neither 0 (PyTorch) nor 1 (HuggingFace)."),
                };
            default:
                throw Unmappable(file, $"com.microsoft.{node.OpType}", $"{file}: optimizer op com.microsoft.{node.OpType} ('{node.Name}') has no OnnxTune equivalent; AdamWOptimizer and SGDOptimizerV2 are imported.");
        }
    }

    private static OrtImportException Unmappable(string file, string subject, string message) =>
        new(OrtImportErrorKind.UnmappableOptimizer, subject, message);
}
