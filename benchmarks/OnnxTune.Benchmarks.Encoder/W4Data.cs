using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Layers;
using OnnxTune.Text.MiniLm;
using OnnxTune.Text.Tokenization;
using OnnxTune.Training.Loops;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Benchmarks.Encoder;

/// <summary>
/// W4's shared inputs, made once so that tokenization and the batch order are not part of the comparison:
/// the model (all-MiniLM-L6-v2 + mean pooling + dropout + Linear(384→150), head initialised like nn.Linear),
/// CLINC150 token ids from OnnxTune's WordPiece tokenizer, the batch plan of every epoch (length-bucketed,
/// shuffled) and reference logits of the ONNX model on a few test sentences (each peer checks its forward against them).
/// </summary>
internal static class W4Data
{
    public const int CheckSentences = 8;

    public static W4Settings Prepare(string work, int? trainLimit, int? testLimit, int epochs, int seed)
    {
        Directory.CreateDirectory(work);
        var clinc = ClincFolder();
        var intents = File.ReadAllLines(Path.Combine(clinc, "intents.txt")).Where(l => l.Length > 0).ToList();
        var index = intents.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        var train = Spread(ReadJsonl(Path.Combine(clinc, "train.jsonl")), trainLimit);
        var test = Spread(ReadJsonl(Path.Combine(clinc, "test.jsonl")), testLimit);

        var files = MiniLmModel.Extract();
        var settings = new W4Settings { Epochs = epochs, Seed = seed };
        var head = TaskHeadBuilder.Build(OnnxModelReader.Load(files.ModelPath), new TaskHeadOptions { Outputs = intents.Count, Seed = seed, Dropout = settings.Dropout });
        var trainable = EncoderLayerMap.Create(head.Model).Select(settings.TrainableLayers, [], []);
        OnnxModelWriter.Save(head.Model, Path.Combine(work, W4Settings.ModelFileName));

        var encoder = BertTextEncoder.FromVocabulary(files.VocabularyPath, new BertTextEncoderOptions { MaxLength = settings.MaxLength });
        var trainIds = train.Select(r => encoder.Encode(r.Text)).ToList();
        var testIds = test.Select(r => encoder.Encode(r.Text)).ToList();
        var trainLabels = train.Select(r => (long)index[r.Label]).ToArray();
        var testLabels = test.Select(r => (long)index[r.Label]).ToArray();

        // The plan: OnnxTune's grouping (equal bucket length per batch, IndexedBatches.GroupedShuffled), every epoch.
        var groups = trainIds.Select(ids => Bucket(ids.Length, settings.LengthBucket).ToString(CultureInfo.InvariantCulture)).ToList();
        int[]? current = null;
        var source = IndexedBatches.GroupedShuffled(groups, settings.BatchSize, seed, members => { current = members; return new OnnxTune.Training.TrainingBatch(); });
        var plan = new List<long>();
        var batchEnds = new List<long>();
        for (var e = 1; e <= epochs; e++)
            foreach (var _ in source.Epoch(e))
            {
                plan.AddRange(current!.Select(i => (long)i));
                batchEnds.Add(plan.Count);
            }

        var check = testIds.Take(CheckSentences).ToList();
        var (checkIds, checkMask, checkWidth) = Pad(check, encoder.PaddingTokenId);
        var logits = Reference(Path.Combine(work, W4Settings.ModelFileName), checkIds, checkMask, check.Count, checkWidth, settings.Threads);

        var tensors = new List<SafeTensor>();
        void Ragged(string prefix, List<int[]> ids, long[] labels)
        {
            var offsets = new long[ids.Count + 1];
            for (var i = 0; i < ids.Count; i++) offsets[i + 1] = offsets[i] + ids[i].Length;
            tensors.Add(SafeTensor.FromInt64s($"{prefix}_ids", ids.SelectMany(x => x.Select(v => (long)v)).ToArray(), offsets[^1]));
            tensors.Add(SafeTensor.FromInt64s($"{prefix}_offsets", offsets, offsets.Length));
            tensors.Add(SafeTensor.FromInt64s($"{prefix}_labels", labels, labels.Length));
        }
        Ragged("train", trainIds, trainLabels);
        Ragged("test", testIds, testLabels);
        tensors.Add(SafeTensor.FromInt64s("plan", plan.ToArray(), plan.Count));
        tensors.Add(SafeTensor.FromInt64s("plan_batch_ends", batchEnds.ToArray(), batchEnds.Count));
        tensors.Add(SafeTensor.FromInt64s("check_input_ids", checkIds, check.Count, checkWidth));
        tensors.Add(SafeTensor.FromInt64s("check_attention_mask", checkMask, check.Count, checkWidth));
        tensors.Add(SafeTensor.FromFloats("check_logits", logits, check.Count, intents.Count));
        tensors.Add(SafeTensor.FromInt64s("pad_token_id", [encoder.PaddingTokenId], 1));
        new SafeTensorsFile(tensors, new Dictionary<string, string> { ["tokenizer"] = "OnnxTune.Text BertTextEncoder (Microsoft.ML.Tokenizers WordPiece), all-MiniLM-L6-v2 vocab.txt" })
            .Write(Path.Combine(work, W4Settings.DataFileName));

        settings = settings with
        {
            TrainExamples = train.Count,
            TestExamples = test.Count,
            Classes = intents.Count,
            Trainable = trainable,
            Tokenizer = $"BertTextEncoder over {files.VocabularyPath}, lower case, max length {settings.MaxLength}",
        };
        AtomicFile.WriteAllText(Path.Combine(work, W4Settings.FileName), JsonSerializer.Serialize(settings, W4Settings.Json));
        return settings;
    }

    public static int Bucket(int length, int bucket) => (length + bucket - 1) / bucket * bucket;

    /// <summary>Right-pads token id lists to the longest; returns ids, mask and the width.</summary>
    public static (long[] Ids, long[] Mask, int Width) Pad(IReadOnlyList<int[]> rows, int padId)
    {
        var width = rows.Max(r => r.Length);
        var ids = new long[rows.Count * width];
        var mask = new long[rows.Count * width];
        Array.Fill(ids, padId);
        for (var r = 0; r < rows.Count; r++)
            for (var t = 0; t < rows[r].Length; t++)
            {
                ids[(r * width) + t] = rows[r][t];
                mask[(r * width) + t] = 1;
            }
        return (ids, mask, width);
    }

    /// <summary>Logits of the ONNX model (stock ONNX Runtime) for one padded batch.</summary>
    public static float[] Reference(string modelPath, long[] ids, long[] mask, int rows, int width, int threads)
    {
        using var options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1 };
        using var session = new InferenceSession(modelPath, options);
        return Logits(session, ids, mask, rows, width);
    }

    public static float[] Logits(InferenceSession session, long[] ids, long[] mask, int rows, int width)
    {
        long[] shape = [rows, width];
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, shape);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, shape);
        using var typesValue = OrtValue.CreateTensorValueFromMemory(new long[ids.Length], shape);
        var inputs = new Dictionary<string, OrtValue>
        {
            [BertInputNames.InputIds] = idsValue,
            [BertInputNames.AttentionMask] = maskValue,
            [BertInputNames.TokenTypeIds] = typesValue,
        };
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, inputs, session.OutputNames);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    public static string ClincFolder()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "samples", "datasets", "clinc150");
                if (File.Exists(Path.Combine(candidate, "train.jsonl"))) return candidate;
            }
        throw new FileNotFoundException("samples/datasets/clinc150/train.jsonl was not found above " + AppContext.BaseDirectory);
    }

    private static List<(string Text, string Label)> ReadJsonl(string path) =>
        File.ReadLines(path).Where(l => l.Length > 0).Select(l =>
        {
            using var doc = JsonDocument.Parse(l);
            return (doc.RootElement.GetProperty("text").GetString()!, doc.RootElement.GetProperty("label").GetString()!);
        }).ToList();

    /// <summary>All rows, or an even spread over the (intent-ordered) file so that every intent appears.</summary>
    private static List<(string Text, string Label)> Spread(List<(string Text, string Label)> rows, int? limit)
    {
        if (limit is not { } n || n >= rows.Count) return rows;
        return Enumerable.Range(0, n).Select(i => rows[(int)((long)i * rows.Count / n)]).ToList();
    }
}
