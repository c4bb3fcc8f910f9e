namespace OnnxTune.Autodiff.Optimizers;

/// <summary>One optimizer's per-parameter update, emitted as ONNX nodes (one small class per optimizer).</summary>
internal interface IOptimizerBlock
{
    /// <summary>State tensors kept per parameter, as name suffixes (<c>.exp_avg</c>...).</summary>
    IReadOnlyList<string> StateSuffixes { get; }

    /// <summary>Emits the update of one parameter, writing <see cref="OptimizerParameterValues.Outputs"/>.</summary>
    void EmitUpdate(OptimizerGraphContext context, OptimizerParameterValues parameter);
}

/// <summary>Value names of one parameter in the optimizer graph.</summary>
/// <param name="Name">Parameter name.</param>
/// <param name="Type">Element type.</param>
/// <param name="Value">The parameter input.</param>
/// <param name="Gradient">The gradient to apply (after clipping, when enabled).</param>
/// <param name="States">State inputs, in <see cref="IOptimizerBlock.StateSuffixes"/> order.</param>
/// <param name="Outputs">Output names: the parameter, then each state, in the same order.</param>
internal sealed record OptimizerParameterValues(
    string Name, global::Onnx.TensorProto.Types.DataType Type, string Value, string Gradient, IReadOnlyList<string> States, IReadOnlyList<string> Outputs);
