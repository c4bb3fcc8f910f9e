using OnnxTune.Benchmarks.Workloads;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace OnnxTune.Benchmarks.TorchSharp;

/// <summary>W1: Linear(384→256), ReLU, Linear(256→150).</summary>
internal sealed class HeadModel : Module<Tensor, Tensor>
{
    private readonly Linear fc1;
    private readonly Linear fc2;

    public HeadModel() : base(nameof(HeadModel))
    {
        fc1 = Linear(WorkloadSpec.Hidden, WorkloadSpec.HeadHidden);
        fc2 = Linear(WorkloadSpec.HeadHidden, WorkloadSpec.Classes);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input) => fc2.forward(functional.relu(fc1.forward(input)));
}

/// <summary>
/// One post-LayerNorm BERT layer (HF BertLayer without dropout): self-attention with an additive mask,
/// residual + LayerNorm, erf-GELU feed-forward, residual + LayerNorm.
/// </summary>
internal sealed class BertLayer : Module<Tensor, Tensor, Tensor>
{
    // Field names become parameter names (layers.{i}.query.weight, ...); benchmarks/README.md maps them to HF names.
    private readonly Linear query;
    private readonly Linear key;
    private readonly Linear value;
    private readonly Linear attention_output;
    private readonly LayerNorm attention_norm;
    private readonly Linear intermediate;
    private readonly Linear output;
    private readonly LayerNorm output_norm;

    public BertLayer() : base(nameof(BertLayer))
    {
        const int h = WorkloadSpec.Hidden;
        query = Linear(h, h);
        key = Linear(h, h);
        value = Linear(h, h);
        attention_output = Linear(h, h);
        attention_norm = LayerNorm(h, WorkloadSpec.LayerNormEps);
        intermediate = Linear(h, WorkloadSpec.Intermediate);
        output = Linear(WorkloadSpec.Intermediate, h);
        output_norm = LayerNorm(h, WorkloadSpec.LayerNormEps);
        RegisterComponents();
    }

    /// <param name="hidden">[batch, seq, 384].</param>
    /// <param name="additiveMask">[batch, 1, 1, seq]: 0 where attended, float.MinValue where masked.</param>
    public override Tensor forward(Tensor hidden, Tensor additiveMask)
    {
        long b = hidden.shape[0], s = hidden.shape[1];
        Tensor SplitHeads(Tensor t) => t.view(b, s, WorkloadSpec.Heads, WorkloadSpec.HeadSize).transpose(1, 2);

        var q = SplitHeads(query.forward(hidden));
        var k = SplitHeads(key.forward(hidden));
        var v = SplitHeads(value.forward(hidden));
        var scores = matmul(q, k.transpose(-1, -2)).div(Math.Sqrt(WorkloadSpec.HeadSize)).add(additiveMask);
        var probs = functional.softmax(scores, -1);
        var context = matmul(probs, v).transpose(1, 2).reshape(b, s, WorkloadSpec.Hidden);
        var attended = attention_norm.forward(attention_output.forward(context).add(hidden));
        var inner = functional.gelu(intermediate.forward(attended));
        return output_norm.forward(output.forward(inner).add(attended));
    }
}

/// <summary>W2/W3: BERT layers over given hidden states, mean-pool over the sequence, Linear(384→150).</summary>
internal sealed class EncoderClassifier : Module<Tensor, Tensor, Tensor>
{
    private readonly ModuleList<BertLayer> layers;
    private readonly Linear classifier;

    public EncoderClassifier(int layerCount) : base(nameof(EncoderClassifier))
    {
        layers = new ModuleList<BertLayer>(Enumerable.Range(0, layerCount).Select(_ => new BertLayer()).ToArray());
        classifier = Linear(WorkloadSpec.Hidden, WorkloadSpec.Classes);
        RegisterComponents();
    }

    /// <param name="hidden">[batch, seq, 384].</param>
    /// <param name="attentionMask">[batch, seq], 1 = attend, 0 = padding (HF convention).</param>
    public override Tensor forward(Tensor hidden, Tensor attentionMask)
    {
        // HF get_extended_attention_mask: (1 - mask) * finfo(float32).min, broadcast over heads and queries.
        var additive = (1.0f - attentionMask.unsqueeze(1).unsqueeze(2)) * float.MinValue;
        var x = hidden;
        foreach (var layer in layers)
        {
            x = layer.forward(x, additive);
        }

        return classifier.forward(x.mean([1]));
    }
}
