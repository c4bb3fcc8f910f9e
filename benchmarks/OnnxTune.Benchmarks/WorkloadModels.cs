using Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.Models;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Benchmarks.Workloads;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Benchmarks;

/// <summary>The benchmark workloads as inference ONNX graphs, built in code (the same architecture as the peers).</summary>
internal static class WorkloadModels
{
    public const int Hidden = WorkloadSpec.Hidden, Heads = WorkloadSpec.Heads, HeadSize = WorkloadSpec.HeadSize;
    public const int Intermediate = WorkloadSpec.Intermediate, Classes = WorkloadSpec.Classes;

    /// <summary>The inference graph of <paramref name="spec"/>, weights drawn from <paramref name="seed"/>.</summary>
    public static ModelProto For(WorkloadSpec spec, int seed, GraphForm form = GraphForm.Operators) =>
        spec.Kind == WorkloadKind.Head ? Head(seed) : Encoder(spec.Layers, seed, form);

    /// <summary>W1: Linear(384→256), ReLU, Linear(256→150).</summary>
    public static ModelProto Head(int seed) =>
        new MlpModelBuilder(Hidden) { InputName = "input", OutputName = "logits" }.Layer(WorkloadSpec.HeadHidden).Layer(Classes).Build(seed);

    /// <summary>
    /// W2/W3: post-LN BERT layers (MiniLM-L6 sizes, erf GELU, eps 1e-12), mean-pool, Linear(384→150). With
    /// <see cref="GraphForm.Operators"/> LayerNorm and GELU are ONNX's LayerNormalization (opset 17) and Gelu (opset 20)
    /// ops, as PyTorch exports them at opset 20; with <see cref="GraphForm.Decomposed"/> they are spelled out in
    /// element-wise ops, as older exports (and all-MiniLM-L6-v2's model.onnx) have them.
    /// </summary>
    public static ModelProto Encoder(int layers, int seed, GraphForm form = GraphForm.Operators)
    {
        var fused = form == GraphForm.Operators;
        var rng = new Random(seed);
        var model = new ModelProto { IrVersion = 8, ProducerName = "OnnxTune.Benchmarks", Graph = new GraphProto { Name = $"bert{layers}" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = fused ? 20 : 17 });
        var e = new GraphEditor(model.Graph);
        e.Reserve("input"); e.Reserve("attention_mask");
        e.AddInput(ValueInfos.Tensor("input", DataType.Float, "batch", "seq", (long)Hidden));
        e.AddInput(ValueInfos.Tensor("attention_mask", DataType.Float, "batch", "seq"));

        string Linear(string x, string name, int fanIn, int fanOut)
        {
            var bound = 1.0 / Math.Sqrt(fanIn);
            var w = new float[fanIn * fanOut];
            for (var i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            var b = new float[fanOut];
            for (var i = 0; i < b.Length; i++) b[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            // Stored [in, out] and used by MatMul, as PyTorch exports Linear layers on 3-D inputs.
            var wn = e.AddInitializer(TensorProtos.Float(name + ".weight", w, fanIn, fanOut), makeUnique: false);
            var bn = e.AddInitializer(TensorProtos.Float(name + ".bias", b, fanOut), makeUnique: false);
            return e.Add("Add", [e.Add("MatMul", [x, wn], name + "_mm"), bn], name + "_out");
        }
        var eps = fused ? "" : e.AddInitializer(TensorProtos.Float("ln_eps", [(float)WorkloadSpec.LayerNormEps]));
        string LayerNorm(string x, string name)
        {
            var gamma = e.AddInitializer(TensorProtos.Float(name + ".weight", Enumerable.Repeat(1f, Hidden).ToArray(), Hidden), makeUnique: false);
            var beta = e.AddInitializer(TensorProtos.Float(name + ".bias", new float[Hidden], Hidden), makeUnique: false);
            if (fused)
                return e.Add("LayerNormalization", [x, gamma, beta], name + "_out", Attr.Int("axis", -1), Attr.Float("epsilon", (float)WorkloadSpec.LayerNormEps));
            var mean = e.Add("ReduceMean", [x], name + "_mean", Attr.Ints("axes", -1));
            var d = e.Add("Sub", [x, mean], name + "_centered");
            var variance = e.Add("ReduceMean", [e.Add("Mul", [d, d], name + "_sq")], name + "_var", Attr.Ints("axes", -1));
            var std = e.Add("Sqrt", [e.Add("Add", [variance, eps], name + "_var_eps")], name + "_std");
            return e.Add("Add", [e.Add("Mul", [e.Add("Div", [d, std], name + "_norm"), gamma], name + "_scaled"), beta], name + "_out");
        }

        var one = e.AddInitializer(TensorProtos.Float("one", [1f]));
        var half = fused ? "" : e.AddInitializer(TensorProtos.Float("half", [0.5f]));
        var sqrt2 = fused ? "" : e.AddInitializer(TensorProtos.Float("sqrt2", [MathF.Sqrt(2f)]));
        var scale = e.AddInitializer(TensorProtos.Float("attention_scale", [MathF.Sqrt(HeadSize)]));
        var minValue = e.AddInitializer(TensorProtos.Float("mask_min", [float.MinValue]));
        var splitHeads = e.AddInitializer(TensorProtos.Int64("split_heads", [0, 0, Heads, HeadSize], 4));
        var mergeHeads = e.AddInitializer(TensorProtos.Int64("merge_heads", [0, 0, Hidden], 3));
        var maskAxes = e.AddInitializer(TensorProtos.Int64("mask_axes", [1, 2], 2));

        // Additive mask (1 - mask) * min, as HF does: [B, 1, 1, S].
        var additive = e.Add("Mul", [e.Add("Sub", [one, "attention_mask"], "inv_mask"), minValue], "additive_mask");
        var mask4 = e.Add("Unsqueeze", [additive, maskAxes], "additive_mask_4d");

        var h = "input";
        for (var l = 0; l < layers; l++)
        {
            var p = $"layers.{l}";
            string Heads4(string x, long[] perm) => e.Add("Transpose", [e.Add("Reshape", [x, splitHeads], x + "_split")], x + "_heads", Attr.Ints("perm", perm));
            var q = Heads4(Linear(h, p + ".query", Hidden, Hidden), [0, 2, 1, 3]);
            var kT = Heads4(Linear(h, p + ".key", Hidden, Hidden), [0, 2, 3, 1]);
            var v = Heads4(Linear(h, p + ".value", Hidden, Hidden), [0, 2, 1, 3]);
            var scores = e.Add("Add", [e.Add("Div", [e.Add("MatMul", [q, kT], p + "_qk"), scale], p + "_scaled"), mask4], p + "_scores");
            var probs = e.Add("Softmax", [scores], p + "_probs", Attr.Int("axis", -1));
            var context = e.Add("Transpose", [e.Add("MatMul", [probs, v], p + "_ctx")], p + "_ctx_t", Attr.Ints("perm", 0, 2, 1, 3));
            var merged = e.Add("Reshape", [context, mergeHeads], p + "_ctx_merged");
            var attn = Linear(merged, p + ".attention_output", Hidden, Hidden);
            var h1 = LayerNorm(e.Add("Add", [attn, h], p + "_res1"), p + ".attention_norm");
            var inter = Linear(h1, p + ".intermediate", Hidden, Intermediate);
            string gelu;
            if (fused)
                gelu = e.Add("Gelu", [inter], p + "_gelu");
            else
            {
                var erf = e.Add("Erf", [e.Add("Div", [inter, sqrt2], p + "_gelu_div")], p + "_erf");
                gelu = e.Add("Mul", [e.Add("Mul", [inter, half], p + "_gelu_half"), e.Add("Add", [erf, one], p + "_erf1")], p + "_gelu");
            }
            var output = Linear(gelu, p + ".output", Intermediate, Hidden);
            h = LayerNorm(e.Add("Add", [output, h1], p + "_res2"), p + ".output_norm");
        }
        // ReduceMean takes its axes as an input from opset 18.
        var pooled = fused
            ? e.Add("ReduceMean", [h, e.AddInitializer(TensorProtos.Int64("pool_axes", [1], 1))], "pooled", Attr.Int("keepdims", 0))
            : e.Add("ReduceMean", [h], "pooled", Attr.Ints("axes", 1), Attr.Int("keepdims", 0));
        var bound = 1.0 / Math.Sqrt(Hidden);
        var wc = Enumerable.Range(0, Classes * Hidden).Select(_ => (float)((rng.NextDouble() * 2 - 1) * bound)).ToArray();
        var bc = Enumerable.Range(0, Classes).Select(_ => (float)((rng.NextDouble() * 2 - 1) * bound)).ToArray();
        e.AddInitializer(TensorProtos.Float("classifier.weight", wc, Classes, Hidden), makeUnique: false);
        e.AddInitializer(TensorProtos.Float("classifier.bias", bc, Classes), makeUnique: false);
        var logits = e.Reserve("logits");
        e.AddNode("Gemm", [pooled, "classifier.weight", "classifier.bias"], [logits], Attr.Int("transB", 1));
        model.Graph.Output.Add(ValueInfos.Tensor(logits, DataType.Float, "batch", (long)Classes));
        return model;
    }
}

/// <summary>How the encoder workloads spell LayerNorm and GELU in ONNX.</summary>
internal enum GraphForm
{
    /// <summary>LayerNormalization and Gelu operators.</summary>
    Operators,
    /// <summary>Element-wise decompositions (ReduceMean/Sub/Sqrt/Div..., Div/Erf/Add/Mul).</summary>
    Decomposed,
}
