using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Autodiff.Optimizers;

/// <summary>
/// <c>torch.optim.AdamW</c> (single-tensor path): <c>p *= 1 - lr·wd</c>; <c>m.lerp_(g, 1-β1)</c>;
/// <c>v = β2·v + (1-β2)·g²</c>; <c>p -= lr/(1-β1^t) · m / (√v/√(1-β2^t) + ε)</c>. Scalar factors are computed
/// in float64 like Python does, then cast to the parameter type.
/// </summary>
internal sealed class AdamWBlock(double beta1, double beta2, double epsilon, double weightDecay) : IOptimizerBlock
{
    public IReadOnlyList<string> StateSuffixes { get; } = [".exp_avg", ".exp_avg_sq"];

    public void EmitUpdate(OptimizerGraphContext c, OptimizerParameterValues p)
    {
        var t = p.Type;
        var param = p.Value;
        if (weightDecay != 0)
        {
            var decay = c.DoubleScalar("adamw.decay", t, () =>
                c.Op("Sub", [c.Constant(1, DataType.Double), c.Op("Mul", [c.LearningRateDouble, c.Constant(weightDecay, DataType.Double)])]));
            param = c.Op("Mul", [param, decay]);
        }
        var g = p.Gradient;
        var m = p.States[0];
        var v = p.States[1];
        // exp_avg.lerp_(grad, 1 - beta1) == m + (1-β1)·(g - m) for weights below 0.5
        var mNew = c.Op("Add", [m, c.Op("Mul", [c.Op("Sub", [g, m]), c.Constant(1 - beta1, t)])], p.Outputs[1]);
        var vNew = c.Op("Add", [c.Op("Mul", [v, c.Constant(beta2, t)]), c.Op("Mul", [c.Op("Mul", [g, g]), c.Constant(1 - beta2, t)])], p.Outputs[2]);
        var stepSize = c.DoubleScalar("adamw.step_size", t, () =>
            c.Op("Div", [c.LearningRateDouble, BiasCorrection(c, beta1)]));
        var bc2Sqrt = c.DoubleScalar("adamw.bc2_sqrt", t, () => c.Op("Sqrt", [BiasCorrection(c, beta2)]));
        var denom = c.Op("Add", [c.Op("Div", [c.Op("Sqrt", [vNew]), bc2Sqrt]), c.Constant(epsilon, t)]);
        c.Op("Sub", [param, c.Op("Mul", [c.Op("Div", [mNew, denom]), stepSize])], p.Outputs[0]);
    }

    // 1 - beta^step, in float64.
    private static string BiasCorrection(OptimizerGraphContext c, double beta) =>
        c.Op("Sub", [c.Constant(1, DataType.Double), c.Op("Pow", [c.Constant(beta, DataType.Double), c.StepDouble])]);
}
