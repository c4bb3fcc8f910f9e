namespace OnnxTune.Autodiff.Optimizers;

/// <summary>
/// <c>torch.optim.SGD</c>: <c>g += wd·p</c>; with momentum <c>buf = g</c> on the first step, else
/// <c>momentum·buf + (1-dampening)·g</c>; Nesterov uses <c>g + momentum·buf</c>, otherwise <c>buf</c>; <c>p -= lr·g</c>.
/// </summary>
internal sealed class SgdBlock(double momentum, double dampening, bool nesterov, double weightDecay) : IOptimizerBlock
{
    public IReadOnlyList<string> StateSuffixes { get; } = momentum != 0 ? [".momentum_buffer"] : [];

    public void EmitUpdate(OptimizerGraphContext c, OptimizerParameterValues p)
    {
        var t = p.Type;
        var g = p.Gradient;
        if (weightDecay != 0)
            g = c.Op("Add", [g, c.Op("Mul", [p.Value, c.Constant(weightDecay, t)])]);
        if (momentum != 0)
        {
            var running = c.Op("Add", [c.Op("Mul", [p.States[0], c.Constant(momentum, t)]), c.Op("Mul", [g, c.Constant(1 - dampening, t)])]);
            var buf = c.Op("Where", [c.IsFirstStep, g, running], p.Outputs[1]);
            g = nesterov ? c.Op("Add", [g, c.Op("Mul", [buf, c.Constant(momentum, t)])]) : buf;
        }
        c.Op("Sub", [p.Value, c.Op("Mul", [g, c.LearningRate(t)])], p.Outputs[0]);
    }
}
