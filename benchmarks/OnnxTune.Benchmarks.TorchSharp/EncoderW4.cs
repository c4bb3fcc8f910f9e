using System.Diagnostics;
using System.Text.Json;
using OnnxTune.Benchmarks.Encoder;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OnnxTune.Benchmarks.TorchSharp;

/// <summary>
/// The TorchSharp peer of W4 (issue 14): all-MiniLM-L6-v2's top two layers + the 150-class head fine-tuned on
/// CLINC150 from what <c>OnnxTune.Benchmarks.Encoder prepare</c> wrote (settings, the ONNX model whose initializers
/// are the initial weights, OnnxTune's token ids and batch plan). Same forward as <c>benchmarks/pytorch/w4.py</c>:
/// HF BertModel semantics, frozen prefix (embeddings, layers 0–3) under no_grad, dynamic padding per batch,
/// torch.optim.AdamW. Usage: <c>--w4 --work DIR</c>; prints one JSON line.
/// </summary>
internal static class EncoderW4
{
    private const int Heads = 12;
    private const double LayerNormEps = 1e-12;
    private const float MaskValue = -10000f;
    private const double CheckTolerance = 1e-4;

    public static int Run(string work)
    {
        var s = W4Settings.Load(work);
        torch.set_num_interop_threads(1);
        torch.set_num_threads(s.Threads);
        torch.manual_seed(s.Seed);

        var data = SafeTensorsFile.Read(Path.Combine(work, W4Settings.DataFileName));
        var train = Ragged(data, "train");
        var trainLabels = data.Get("train_labels").ToInt64Array();
        var test = Ragged(data, "test");
        var testLabels = data.Get("test_labels").ToInt64Array();
        var padId = data.Get("pad_token_id").ToInt64Array()[0];
        var plan = Plan(data, train.Count);
        ProcessMemory.ResetPeak();

        var wall = Stopwatch.StartNew();
        var (weights, renamed) = OnnxWeights(Path.Combine(work, s.Model));
        var layers = 1 + weights.Keys.Where(n => n.StartsWith("encoder.layer.", StringComparison.Ordinal)).Max(n => int.Parse(n.Split('.')[2], System.Globalization.CultureInfo.InvariantCulture));
        var firstTrainable = layers - s.TrainableLayers;
        var trainable = s.Trainable.Select(n => renamed.GetValueOrDefault(n, n)).Order(StringComparer.Ordinal).ToList();
        var expected = weights.Keys.Where(n => n.StartsWith("head.", StringComparison.Ordinal)
            || Enumerable.Range(firstTrainable, s.TrainableLayers).Any(i => n.StartsWith($"encoder.layer.{i}.", StringComparison.Ordinal))).Order(StringComparer.Ordinal).ToList();
        if (!trainable.SequenceEqual(expected))
            throw new InvalidDataException($"The trainable set of w4.json [{string.Join(", ", trainable)}] is not layers {firstTrainable}..{layers - 1} + head.");
        var model = new Bert(weights, layers, firstTrainable, s.Dropout);

        var reference = data.Get("check_logits");
        float diff;
        using (var ids = Int64(data.Get("check_input_ids")))
        using (var mask = Int64(data.Get("check_attention_mask")))
        using (var expectedLogits = torch.tensor(reference.ToFloatArray(), reference.Shape))
        using (var logits = model.Logits(ids, mask))
            diff = (logits - expectedLogits).abs().max().item<float>();
        if (!(diff <= CheckTolerance))
            throw new InvalidDataException($"The TorchSharp forward differs from ONNX Runtime's logits by {diff:E3} (> {CheckTolerance}).");
        Console.Error.WriteLine($"[torchsharp] forward matches ONNX Runtime on {reference.Shape[0]} sentences (max |diff| {diff:E2})");

        var parameters = new List<global::TorchSharp.Modules.Parameter>();
        foreach (var n in trainable)
        {
            var p = new global::TorchSharp.Modules.Parameter(weights[n].clone(), requires_grad: true);
            weights[n].Dispose();
            weights[n] = p;
            parameters.Add(p);
        }
        using var optimizer = torch.optim.AdamW(parameters, lr: s.LearningRate, weight_decay: s.WeightDecay);
        var setup = wall.Elapsed;
        var epochLosses = new List<double>();
        var epochSeconds = new List<double>();
        long steps = 0;
        foreach (var epoch in plan)
        {
            var clock = Stopwatch.StartNew();
            var losses = new List<float>();
            foreach (var members in epoch)
            {
                using var scope = NewDisposeScope();
                var (ids, mask) = Pad(members.Select(i => train[(int)i]).ToList(), padId);
                Tensor h, additive;
                using (no_grad())
                    (h, additive) = model.Prefix(ids, mask);
                var logits = model.Suffix(h, additive, mask, training: true);
                var loss = F.cross_entropy(logits, torch.tensor(members.Select(i => trainLabels[i]).ToArray()));
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                losses.Add(loss.item<float>());
                steps++;
            }
            epochLosses.Add(losses.Average());
            epochSeconds.Add(clock.Elapsed.TotalSeconds);
            Console.Error.WriteLine($"[torchsharp] epoch {epochLosses.Count}/{plan.Count}: mean loss {epochLosses[^1]:F4}, {epochSeconds[^1]:F1} s");
        }
        var elapsed = wall.Elapsed;
        var peak = ProcessMemory.PeakRssMb();

        var eval = Stopwatch.StartNew();
        var correct = 0;
        foreach (var chunk in Enumerable.Range(0, test.Count).OrderBy(i => test[i].Length).Chunk(64))
        {
            using var scope = NewDisposeScope();
            var (ids, mask) = Pad(chunk.Select(i => test[i]).ToList(), padId);
            var predicted = model.Logits(ids, mask).argmax(-1).data<long>().ToArray();
            correct += chunk.Where((i, r) => predicted[r] == testLabels[i]).Count();
        }
        var result = new W4Result
        {
            System = "TorchSharp",
            Version = $"TorchSharp {typeof(torch).Assembly.GetName().Version?.ToString(3)}, libtorch {torch.__version__}",
            TrainExamples = train.Count,
            Epochs = plan.Count,
            BatchSize = s.BatchSize,
            Steps = steps,
            WallSeconds = elapsed.TotalSeconds,
            ExamplesPerSecond = (double)train.Count * plan.Count / elapsed.TotalSeconds,
            PeakRssMb = peak,
            TestExamples = test.Count,
            TestAccuracy = (double)correct / test.Count,
            EpochLosses = epochLosses,
            EpochSeconds = epochSeconds,
            Parts = new Dictionary<string, double> { ["weights_from_onnx_s"] = setup.TotalSeconds, ["train_s"] = (elapsed - setup).TotalSeconds },
            EvalSeconds = eval.Elapsed.TotalSeconds,
            Threads = torch.get_num_threads(),
            Notes = $"frozen prefix under no_grad every step, dynamic padding, forward check {diff:E1}",
        };
        Console.WriteLine(JsonSerializer.Serialize(result, W4Result.Json));
        return 0;
    }

    /// <summary>
    /// Float initializers under HF names; the exporter's numbered MatMul weights ([in, out]) are named after the bias
    /// their product feeds (MatMul → Add(bias)) and transposed to nn.Linear's [out, in].
    /// </summary>
    private static (Dictionary<string, Tensor> Weights, Dictionary<string, string> Renamed) OnnxWeights(string path)
    {
        var g = OnnxModelReader.Load(path).Graph;
        var inits = g.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var consumers = g.Node.SelectMany(n => n.Input.Select(i => (i, n))).ToLookup(p => p.i, p => p.n, StringComparer.Ordinal);
        var renamed = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var n in g.Node.Where(n => n.OpType == "MatMul" && inits.TryGetValue(n.Input[1], out var w) && w.Dims.Count == 2))
        {
            var biases = consumers[n.Output[0]].Where(c => c.OpType == "Add").SelectMany(a => a.Input)
                .Where(i => i.EndsWith(".bias", StringComparison.Ordinal) && inits.ContainsKey(i)).ToList();
            if (biases.Count != 1)
                throw new InvalidDataException($"MatMul '{n.Name}': weight '{n.Input[1]}' feeds {biases.Count} named biases; expected one.");
            renamed[n.Input[1]] = biases[0][..^".bias".Length] + ".weight";
        }
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var t in g.Initializer.Where(t => t.DataType == (int)global::Onnx.TensorProto.Types.DataType.Float))
        {
            var values = TensorProtos.ToFloatArray(t);
            var shape = t.Dims.ToArray();
            if (renamed.TryGetValue(t.Name, out var name))
                weights[name] = torch.tensor(values, shape).t().contiguous();
            else if (!t.Name.All(char.IsAsciiDigit))
                weights[t.Name] = torch.tensor(values, shape);
        }
        return (weights, renamed);
    }

    private static List<long[]> Ragged(SafeTensorsFile data, string prefix)
    {
        var ids = data.Get($"{prefix}_ids").ToInt64Array();
        var offsets = data.Get($"{prefix}_offsets").ToInt64Array();
        return Enumerable.Range(0, offsets.Length - 1).Select(i => ids[(int)offsets[i]..(int)offsets[i + 1]]).ToList();
    }

    private static List<List<long[]>> Plan(SafeTensorsFile data, int examples)
    {
        var flat = data.Get("plan").ToInt64Array();
        var epochs = new List<List<long[]>>();
        long start = 0, seen = examples;
        foreach (var end in data.Get("plan_batch_ends").ToInt64Array())
        {
            if (seen == examples) { epochs.Add([]); seen = 0; }
            epochs[^1].Add(flat[(int)start..(int)end]);
            seen += end - start;
            start = end;
        }
        return epochs;
    }

    private static (Tensor Ids, Tensor Mask) Pad(IReadOnlyList<long[]> rows, long padId)
    {
        var width = rows.Max(r => r.Length);
        var ids = new long[rows.Count * width];
        var mask = new long[rows.Count * width];
        Array.Fill(ids, padId);
        for (var r = 0; r < rows.Count; r++)
        {
            rows[r].CopyTo(ids, r * width);
            Array.Fill(mask, 1L, r * width, rows[r].Length);
        }
        return (torch.tensor(ids, [rows.Count, width]), torch.tensor(mask, [rows.Count, width]));
    }

    private static Tensor Int64(SafeTensor t) => torch.tensor(t.ToInt64Array(), t.Shape);

    /// <summary>HF BertModel forward + mean pooling + dropout + Linear over a dictionary of weights.</summary>
    private sealed class Bert(Dictionary<string, Tensor> w, int layers, int firstTrainable, float dropout)
    {
        public (Tensor Hidden, Tensor Additive) Prefix(Tensor ids, Tensor mask)
        {
            var additive = (1.0f - mask.unsqueeze(1).unsqueeze(2).to_type(ScalarType.Float32)) * MaskValue;
            var positions = torch.arange(ids.shape[1], dtype: ScalarType.Int64);
            var x = w["embeddings.word_embeddings.weight"].index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1)
                + w["embeddings.token_type_embeddings.weight"][0] + w["embeddings.position_embeddings.weight"].index_select(0, positions);
            var h = F.layer_norm(x, [x.shape[2]], w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], LayerNormEps);
            for (var i = 0; i < firstTrainable; i++) h = Layer(i, h, additive);
            return (h, additive);
        }

        public Tensor Suffix(Tensor h, Tensor additive, Tensor mask, bool training)
        {
            for (var i = firstTrainable; i < layers; i++) h = Layer(i, h, additive);
            var m = mask.unsqueeze(2).to_type(ScalarType.Float32);
            var pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9);
            pooled = F.dropout(pooled, dropout, training);
            return F.linear(pooled, w["head.dense.weight"], w["head.dense.bias"]);
        }

        public Tensor Logits(Tensor ids, Tensor mask)
        {
            using var noGrad = no_grad();
            var (h, additive) = Prefix(ids, mask);
            return Suffix(h, additive, mask, training: false);
        }

        private Tensor Layer(int i, Tensor h, Tensor additive)
        {
            var p = $"encoder.layer.{i}.";
            long b = h.shape[0], s = h.shape[1], hidden = h.shape[2], d = hidden / Heads;
            Tensor Proj(string name, Tensor x) => F.linear(x, w[p + name + ".weight"], w[p + name + ".bias"]);
            Tensor Split(Tensor t) => t.view(b, s, Heads, d).transpose(1, 2);
            var q = Split(Proj("attention.self.query", h));
            var k = Split(Proj("attention.self.key", h));
            var v = Split(Proj("attention.self.value", h));
            var scores = matmul(q, k.transpose(-1, -2)).div(Math.Sqrt(d)).add(additive);
            var context = matmul(F.softmax(scores, -1), v).transpose(1, 2).reshape(b, s, hidden);
            var h1 = F.layer_norm(Proj("attention.output.dense", context) + h, [hidden], w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], LayerNormEps);
            var f = Proj("output.dense", F.gelu(Proj("intermediate.dense", h1)));
            return F.layer_norm(f + h1, [hidden], w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], LayerNormEps);
        }
    }
}
