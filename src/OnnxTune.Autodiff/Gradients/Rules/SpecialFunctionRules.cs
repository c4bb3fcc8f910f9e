using OnnxTune.Onnx.Graph;

namespace OnnxTune.Autodiff.Gradients.Rules;

[GradientRule("Erf")]
internal sealed class ErfGradient : GradientRule
{
    // d erf(x) = 2/sqrt(pi) * exp(-x^2)
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var gauss = ctx.Op("Exp", ctx.Op("Neg", ctx.Op("Mul", x, x)));
        return [ctx.Op("Mul", ctx.GradOutput(0)!, ctx.Op("Mul", gauss, ctx.ScalarLike((float)(2 / Math.Sqrt(Math.PI)), x)))];
    }
}

[GradientRule("Gelu", SinceVersion = 20)]
internal sealed class GeluGradient : GradientRule
{
    public override IReadOnlyList<string?> Build(GradientContext ctx)
    {
        var x = ctx.Input(0);
        var dy = ctx.GradOutput(0)!;
        var approximate = ctx.Node.GetString("approximate", "none");
        string S(double v) => ctx.ScalarLike((float)v, x);
        string Mul(string a, string b) => ctx.Op("Mul", a, b);
        string Add(string a, string b) => ctx.Op("Add", a, b);
        switch (approximate)
        {
            case "none":
                {
                    // y = x * Phi(x): dy/dx = Phi(x) + x * phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2, phi(x) = exp(-x^2/2) / sqrt(2 pi).
                    // Every op is a full pass over the (large) intermediate tensor, so: Phi as HardSigmoid(erf, 0.5, 0.5),
                    // the affine map in one pass (erf is in [-1, 1], so the clamp to [0, 1] never bites). A 3-way
                    // Sum would save another pass, but ORT's variadic Sum kernel is ~3.5x slower than an Add.
                    var erf = ctx.Op("Erf", Mul(x, S(1 / Math.Sqrt(2))));
                    var cdf = ctx.Op("HardSigmoid", [erf], Attr.Float("alpha", 0.5f), Attr.Float("beta", 0.5f));
                    var xPdf = Mul(Mul(x, ctx.Op("Exp", Mul(Mul(x, S(-0.5)), x))), S(1 / Math.Sqrt(2 * Math.PI)));
                    return [Mul(dy, Add(cdf, xPdf))];
                }
            case "tanh":
                {
                    // y = x/2 * (1 + t), t = tanh(k (x + c x^3)): dy/dx = (1 + t)/2 + x/2 * (1 - t^2) * k (1 + 3c x^2)
                    const double c = 0.044715;
                    var k = Math.Sqrt(2 / Math.PI);
                    var x2 = Mul(x, x);
                    var t = ctx.Op("Tanh", Mul(Mul(x, Add(S(1), Mul(x2, S(c)))), S(k)));
                    var left = Mul(Add(S(1), t), S(0.5));
                    var sech2 = ctx.Op("Sub", S(1), Mul(t, t));
                    var inner = Mul(Add(S(1), Mul(x2, S(3 * c))), S(k));
                    var right = Mul(Mul(x, S(0.5)), Mul(sech2, inner));
                    return [Mul(dy, Add(left, right))];
                }
            default:
                throw new OnnxTuneException($"{ctx.Node.Describe()} has unknown approximate='{approximate}' (expected 'none' or 'tanh').");
        }
    }
}
