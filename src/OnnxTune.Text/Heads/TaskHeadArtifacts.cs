using System.Security.Cryptography;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Text.Heads;

/// <summary>Builds training artifacts for an encoder + head so that its dropout is on only while training.</summary>
public static class TaskHeadArtifacts
{
    /// <summary>Builds the artifacts with OnnxTune's AdamW/SGD optimizer graph (see the other overload).</summary>
    /// <param name="model">An inference model made by <see cref="TaskHeadBuilder.Build"/>.</param>
    /// <param name="options">Selection, loss and optimizer.</param>
    public static TrainingArtifacts Build(ModelProto model, ArtifactOptions options) =>
        Build(model, options, (p, spec, opset) => Autodiff.Optimizers.OptimizerGraphBuilder.Build(p, spec, opset));

    /// <summary>
    /// Like <see cref="ArtifactBuilder.Build(ModelProto, ArtifactOptions, string?)"/>, with the head Dropout's <c>training_mode</c> set to true in the
    /// training graph (the backward pass reuses the forward mask), false in the eval graph, and the inference model
    /// being <paramref name="model"/> itself (dropout off).
    /// </summary>
    /// <param name="model">An inference model made by <see cref="TaskHeadBuilder.Build"/> (dropout in inference mode).</param>
    /// <param name="options">Selection, loss and optimizer.</param>
    /// <param name="optimizerGraph">Builds the optimizer graph (see <c>OptimizerGraphBuilder.Build</c>).</param>
    public static TrainingArtifacts Build(ModelProto model, ArtifactOptions options, Func<IReadOnlyList<TensorSpec>, OptimizerSpec, long, ModelProto> optimizerGraph)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var inference = model.Clone();
        TaskHeadBuilder.SetDropoutTraining(inference, training: false);
        var training = inference.Clone();
        var dropouts = TaskHeadBuilder.SetDropoutTraining(training, training: true);
        var sha = Convert.ToHexStringLower(SHA256.HashData(OnnxModelWriter.ToBytes(inference)));
        var built = ArtifactBuilder.Build(training, options, optimizerGraph, sha);
        if (options.Lora is not null)
        {
            // The builder's inference model is the training-mode one with the adapters: switch its head dropout off.
            inference = built.Inference.Clone();
            TaskHeadBuilder.SetDropoutTraining(inference, training: false);
        }
        if (dropouts == 0) return built with { Inference = inference };
        var eval = built.Eval.Clone();
        TaskHeadBuilder.SetDropoutTraining(eval, training: false);
        return built with { Eval = eval, Inference = inference };
    }
}
