using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Cli.Commands;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Labels;
using OnnxTune.Text.Layers;
using Xunit.Abstractions;

namespace OnnxTune.Cli.Tests.Text;

public sealed partial class TextHeadCliTests(MiniLmTextFixture fx, ITestOutputHelper log) : IClassFixture<MiniLmTextFixture>
{
    [Fact]
    public void Artifacts_with_a_150_class_head_and_two_layers_train_exactly_head_and_layers_4_and_5()
    {
        log.WriteLine(fx.ArtifactsRun.Out);
        var art = fx["art"];
        var manifest = ArtifactManifest.Load(art);
        var inference = OnnxModelReader.Load(Path.Combine(art, manifest.Files.InferenceModel));
        var map = EncoderLayerMap.Create(inference);
        var trainable = manifest.TrainableParameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var expected = map.Assignments.Where(a => a.Block is "head" or "encoder.layer.4" or "encoder.layer.5").Select(a => a.Parameter).ToHashSet(StringComparer.Ordinal);
        Assert.Equal(34, expected.Count);
        Assert.True(expected.SetEquals(trainable), $"trainable: {string.Join(", ", trainable.Order(StringComparer.Ordinal))}");
        Assert.Contains("992", trainable);
        Assert.DoesNotContain("927", trainable);
        Assert.Equal([150L, 384L], manifest.TrainableParameters.Single(p => p.Name == "head.dense.weight").FixedDims);

        // Manifest properties, label map and vocabulary travel with the artifacts.
        var settings = TextModelSettings.FromProperties(manifest.Properties)!;
        Assert.Equal((TaskHeadKind.SequenceClassification, 150, HeadPooling.Mean, 64, true, 2), (settings.Kind, settings.Outputs, settings.Pooling, settings.MaxLength, settings.LowerCase, settings.TrainableLayers!.Value));
        Assert.Equal(fx.Intents, LabelMap.Load(Path.Combine(art, settings.LabelsFile!)).Names);
        Assert.Equal(File.ReadAllBytes(fx["vocab.txt"]), File.ReadAllBytes(Path.Combine(art, settings.VocabularyFile!)));

        // The backward pass covers layers 4, 5 and the head only: no gradient node for any forward node of the
        // embeddings or layers 0-3 (backward nodes are named "<forward node>_Grad/...").
        var training = OnnxModelReader.Load(Path.Combine(art, manifest.Files.TrainingModel));
        var backwardOf = training.Graph.Node.SelectMany(n => n.Output).Where(o => o.Contains("_Grad/", StringComparison.Ordinal))
            .Select(o => o[..o.IndexOf("_Grad/", StringComparison.Ordinal)]).ToHashSet(StringComparer.Ordinal);
        string Key(global::Onnx.NodeProto n) => string.IsNullOrEmpty(n.Name) ? n.OpType + "_" + n.Output[0] : n.Name;
        var blockOf = map.Assignments.ToDictionary(a => a.Parameter, a => a.Block, StringComparer.Ordinal);
        var lower = inference.Graph.Node.Where(n => n.Input.Any(i => blockOf.TryGetValue(i, out var b) && b is "embeddings" or "encoder.layer.0" or "encoder.layer.1" or "encoder.layer.2" or "encoder.layer.3")).ToList();
        var upper = inference.Graph.Node.Where(n => n.Input.Any(i => blockOf.TryGetValue(i, out var b) && b is "encoder.layer.4" or "encoder.layer.5")).ToList();
        Assert.NotEmpty(lower);
        Assert.All(lower, n => Assert.DoesNotContain(Key(n), backwardOf));
        // LayerNorm's γ and β nodes are fused into one LayerNormalization in the training graph (LayerNormFusion):
        // the node differentiated there is the one reading the same parameter.
        string Trained(global::Onnx.NodeProto n) => training.Graph.Node.FirstOrDefault(t => Key(t) == Key(n)) is not null ? Key(n)
            : Key(training.Graph.Node.Single(t => t.OpType == "LayerNormalization" && t.Input.Intersect(n.Input.Where(blockOf.ContainsKey)).Any()));
        Assert.All(upper, n => Assert.Contains(Trained(n), backwardOf));
        Assert.Equal(1 + 2 * 6, training.Graph.Node.Count(n => n.OpType == "LayerNormalization")); // embeddings + two per layer
        Assert.DoesNotContain(training.Graph.Node, n => n.OpType == "ScatterND");

        var nodes = NodeCounts().Match(fx.ArtifactsRun.Out);
        log.WriteLine($"training graph nodes (head + 2 layers): {nodes.Groups[2].Value}, inference {nodes.Groups[1].Value}");
        Assert.True(int.Parse(nodes.Groups[2].Value, CultureInfo.InvariantCulture) < 2 * int.Parse(nodes.Groups[1].Value, CultureInfo.InvariantCulture) + 300);

        // The exported inference model is encoder + head, usable by any ONNX Runtime user.
        using var session = new InferenceSession(Path.Combine(art, manifest.Files.InferenceModel));
        Assert.Equal(["logits"], session.OutputNames);
    }

    [Fact]
    public void Check_passes_on_minilm_with_a_head_and_the_top_two_layers()
    {
        // The whole MiniLM + head graph, short sequences; the selection includes the numbered MatMul weights.
        var model = Path.Combine(fx["art"], "inference_model.onnx");
        var run = CliRunner.Run(fx.Dir, "check", model, "--trainable-layers", "2", "--loss", "cross-entropy",
            "--dim", "batch=2", "--dim", "sequence=4", "--seed", "0").Expect(CheckCommand.Passed);
        log.WriteLine(run.Out);
        Assert.Contains("all 34 parameters pass", run.Out, StringComparison.Ordinal);
        Assert.Contains("1004", run.Out, StringComparison.Ordinal);
        Assert.DoesNotContain(" 927 ", run.Out, StringComparison.Ordinal);
    }

    [Fact]
    public void Label_smoothing_reaches_the_head_loss_and_bad_values_name_the_option()
    {
        using var work = new TempDir();
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", work["art"], "--head", "classification", "--classes", "4",
            "--trainable-layers", "1", "--label-smoothing", "0.1").Expect(0);
        var loss = ArtifactManifest.Load(work["art"]).Loss;
        Assert.Equal((LossKind.CrossEntropy, 0.1, -100L), (loss.Kind, loss.LabelSmoothing, loss.IgnoreIndex!.Value));
        var training = OnnxModelReader.Load(Path.Combine(work["art"], "training_model.onnx"));
        Assert.Contains(training.Graph.Initializer, t => t.Name.Contains("_smoothing", StringComparison.Ordinal));

        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", work["r"], "--head", "regression", "--label-smoothing", "0.1")
            .ExpectFailure("--label-smoothing", "mse");
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", work["b"], "--head", "classification", "--classes", "4", "--label-smoothing", "1.5")
            .ExpectFailure("--label-smoothing", "[0, 1]");
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", work["l"], "--loss", "mse", "--label-smoothing", "0.1")
            .ExpectFailure("--label-smoothing", "cross-entropy");
    }

    [Fact]
    public void Trainable_layers_combine_with_trainable_and_frozen_globs()
    {
        using var work = new TempDir();
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", work["art"], "--head", "classification", "--classes", "4",
            "--trainable-layers", "1", "--trainable", "embeddings.LayerNorm.*", "--frozen", "encoder.layer.5.attention.*").Expect(0);
        var manifest = ArtifactManifest.Load(work["art"]);
        var map = EncoderLayerMap.Create(OnnxModelReader.Load(Path.Combine(work["art"], manifest.Files.InferenceModel)));
        var trainable = manifest.TrainableParameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        // Layer 5 loses its attention biases and LayerNorm by name, and its unnamed attention matrices (992, 993, 996,
        // 1002) through their inferred names (encoder.layer.5.attention.self.query.weight, ...).
        Assert.Equal("encoder.layer.5.attention.self.query.weight", map["992"].InferredName);
        var expected = map.Assignments.Where(a => a.Block == "encoder.layer.5" && !(a.InferredName ?? a.Parameter).StartsWith("encoder.layer.5.attention.", StringComparison.Ordinal)).Select(a => a.Parameter)
            .Concat(["head.dense.weight", "head.dense.bias", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]).ToHashSet(StringComparer.Ordinal);
        Assert.True(expected.SetEquals(trainable), $"trainable: {string.Join(", ", trainable.Order(StringComparer.Ordinal))}");
        Assert.Equal(2 + 2 + 6, trainable.Count); // head, embeddings LayerNorm, layer 5 intermediate/output dense and output LayerNorm
        Assert.Equal("1", manifest.Properties[TextModelSettings.TrainableLayersKey]);
    }

    [Fact]
    public void Inspect_prints_the_layer_of_every_parameter()
    {
        var run = CliRunner.Run(fx.Dir, "inspect", "art").Expect(0);
        Assert.Contains("layers: 6 encoder layers", run.Out, StringComparison.Ordinal);
        Assert.Matches(@"T 992\s+\[384, 384\]\s+encoder\.layer\.5\s+\(via encoder\.layer\.5\.attention\.self\.query\.bias: encoder\.layer\.5\.attention\.self\.query\.weight\)", run.Out);
        Assert.Matches(@"\n\s+927\s+\[384, 384\]\s+encoder\.layer\.0\s+\(via encoder\.layer\.0\.attention\.self\.query\.bias: encoder\.layer\.0\.attention\.self\.query\.weight\)", run.Out);
        Assert.Matches(@"T head\.dense\.weight\s+\[150, 384\]\s+head", run.Out);
        Assert.Matches(@"embeddings\.word_embeddings\.weight\s+\[30522, 384\]\s+embeddings", run.Out);
    }

    [Fact]
    public void Train_on_300_clinc150_texts_lowers_the_loss_and_eval_reports_accuracy_and_macro_f1()
    {
        using var work = new TempDir();
        var context = new CliContext(TextWriter.Null, TextWriter.Null, fx.Dir);
        var result = TrainCommand.Run(context, new TrainSettings("art", "train300.jsonl", work["trained"], Epochs: 1, BatchSize: 32, Seed: 1));
        var losses = result.StepLosses;
        log.WriteLine($"step losses: {string.Join(", ", losses.Select(l => l.ToString("F3", CultureInfo.InvariantCulture)))}");
        log.WriteLine($"{losses.Count} steps, {result.TrainingTime.TotalMilliseconds / losses.Count:F0} ms/step (batch 32, head + 2 layers)");
        Assert.Equal(10, losses.Count);
        Assert.True(losses[0] > 4.5, $"the first loss should be near ln(150) = 5.01, got {losses[0]}");
        Assert.True(losses.TakeLast(3).Average() < losses.Take(3).Average() - 0.3, $"loss should fall: {string.Join(", ", losses)}");

        var run = CliRunner.Run(fx.Dir, "eval", work["trained"], "--data", "test150.jsonl").Expect(0);
        log.WriteLine(run.Out);
        var m = EvalLine().Match(run.Out);
        Assert.True(m.Success, run.ToString());
        Assert.Equal("150", m.Groups[1].Value);
        var accuracy = double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture);
        var f1 = double.Parse(m.Groups[4].Value, CultureInfo.InvariantCulture);
        // Chance is 1/150; one epoch on two examples per intent already does far better.
        Assert.InRange(accuracy, 0.08, 1);
        Assert.InRange(f1, 0.01, accuracy + 0.2);

        // Before training (the artifacts' own checkpoint), the same data scores near chance with a higher loss.
        var before = EvalLine().Match(CliRunner.Run(fx.Dir, "eval", "art", "--data", "test150.jsonl").Expect(0).Out);
        Assert.True(double.Parse(before.Groups[2].Value, CultureInfo.InvariantCulture) > double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Text_data_errors_name_the_file_line_and_problem()
    {
        File.WriteAllText(fx["bad-label.jsonl"], "{\"text\": \"hello\", \"label\": \"greeting\"}\n{\"text\": \"x\", \"label\": \"no_such_intent\"}\n");
        CliRunner.Run(fx.Dir, "train", "art", "--data", "bad-label.jsonl", "--out", "never").ExpectFailure("bad-label.jsonl:2", "'no_such_intent' is not in the label map");
        File.WriteAllText(fx["no-text.csv"], "sentence,label\nhi,balance\n");
        CliRunner.Run(fx.Dir, "eval", "art", "--data", "no-text.csv").ExpectFailure("no 'text' column");
        File.WriteAllText(fx["broken.jsonl"], "{\"text\": \"hi\"\n");
        CliRunner.Run(fx.Dir, "eval", "art", "--data", "broken.jsonl").ExpectFailure("broken.jsonl:1", "not a JSON object");
    }

    [Fact]
    public void Head_flags_are_checked_before_any_work()
    {
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", "x", "--labels", "labels.txt").ExpectFailure("--labels needs --head");
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", "x", "--head", "classification").ExpectFailure("--labels <file> or --classes <n>");
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", "x", "--head", "classification", "--labels", "labels.txt", "--classes", "3").ExpectFailure("--classes 3 disagrees");
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", "x", "--head", "classification", "--classes", "3", "--trainable-layers", "7").ExpectFailure("the encoder has 6");
        CliRunner.Run(fx.Dir, "artifacts", "model.onnx", "--out", "x", "--head", "token-classification", "--classes", "3", "--pooling", "first").ExpectFailure("--pooling does not apply");
    }

    [Fact]
    public void Csv_regression_head_trains_and_evaluates_with_mse()
    {
        using var work = new TempDir();
        File.Copy(fx["model.onnx"], work["model.onnx"]);
        File.Copy(fx["vocab.txt"], work["vocab.txt"]);
        // Target: 1 for questions about money, 0 otherwise; quoted fields with commas and escaped quotes.
        File.WriteAllText(work["scores.csv"], string.Join('\n',
            "text,label",
            "\"what's my balance, please\",1",
            "how much money do i have,1",
            "\"transfer \"\"50\"\" dollars\",1",
            "play some music,0",
            "\"what's the weather, today\",0",
            "set an alarm for 7,0") + "\n");
        CliRunner.Run(work.Path, "artifacts", "model.onnx", "--out", "art", "--head", "regression", "--trainable-layers", "0", "--pooling", "first", "--lr", "0.01").Expect(0);
        var manifest = ArtifactManifest.Load(work["art"]);
        Assert.Equal(LossKind.Mse, manifest.Loss.Kind);
        Assert.Equal("predictions", manifest.Loss.OutputName);
        var train = CliRunner.Run(work.Path, "train", "art", "--data", "scores.csv", "--out", "trained", "--epochs", "3", "--batch-size", "3").Expect(0);
        log.WriteLine(train.Out);
        var before = EvalLoss().Match(CliRunner.Run(work.Path, "eval", "art", "--data", "scores.csv").Expect(0).Out);
        var eval = CliRunner.Run(work.Path, "eval", "trained", "--data", "scores.csv").Expect(0);
        log.WriteLine(eval.Out);
        Assert.DoesNotContain("accuracy", eval.Out, StringComparison.Ordinal);
        var after = EvalLoss().Match(eval.Out);
        Assert.Equal("6", after.Groups[1].Value);
        Assert.True(double.Parse(after.Groups[2].Value, CultureInfo.InvariantCulture) < double.Parse(before.Groups[2].Value, CultureInfo.InvariantCulture), eval.Out);
    }

    [Fact]
    public void Token_classification_head_trains_from_safetensors_with_ignored_positions()
    {
        using var work = new TempDir();
        // [CLS] w w w [SEP] [PAD] rows; special tokens and padding carry -100.
        long[] ids = [101, 2054, 2003, 1996, 102, 0, 101, 2377, 2070, 102, 0, 0, 101, 3198, 2019, 8285, 2005, 102, 101, 2131, 102, 0, 0, 0];
        var mask = TokenClassificationSetup(work, ids, rows: 4);
        var result = TrainCommand.Run(new CliContext(TextWriter.Null, TextWriter.Null, work.Path),
            new TrainSettings("art", "tokens.safetensors", "trained", Epochs: 8, BatchSize: 2, Seed: 0));
        log.WriteLine(string.Join(", ", result.EpochMeanLosses.Select(l => l.ToString("F4", CultureInfo.InvariantCulture))));
        Assert.All(result.StepLosses, l => Assert.True(float.IsFinite(l)));
        Assert.True(result.EpochMeanLosses[^1] < 0.7 * result.EpochMeanLosses[0], string.Join(", ", result.EpochMeanLosses));

        using var session = new InferenceSession(work["trained/model.onnx"]);
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids[..6], [1, 6]);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask[..6], [1, 6]);
        using var typesValue = OrtValue.CreateTensorValueFromMemory(new long[6], [1, 6]);
        using var outputs = session.Run(new RunOptions(), ["input_ids", "attention_mask", "token_type_ids"], [idsValue, maskValue, typesValue], ["logits"]);
        Assert.Equal([1L, 6L, 3L], outputs[0].GetTensorTypeAndShape().Shape);
    }

    [Fact]
    public void Train_schedule_warms_up_from_zero_and_decays_linearly()
    {
        using var work = new TempDir();
        long[] ids = [101, 2054, 2003, 1996, 102, 0, 101, 2377, 2070, 102, 0, 0];
        var mask = TokenClassificationSetup(work, ids, rows: 2);
        var context = new CliContext(TextWriter.Null, TextWriter.Null, work.Path);
        float[] Logits(string dir)
        {
            using var session = new InferenceSession(work[dir + "/model.onnx"]);
            using var idsValue = OrtValue.CreateTensorValueFromMemory(ids[..6], [1, 6]);
            using var maskValue = OrtValue.CreateTensorValueFromMemory(mask[..6], [1, 6]);
            using var typesValue = OrtValue.CreateTensorValueFromMemory(new long[6], [1, 6]);
            using var outputs = session.Run(new RunOptions(), ["input_ids", "attention_mask", "token_type_ids"], [idsValue, maskValue, typesValue], ["logits"]);
            return outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }

        // One step: with the whole run as warm-up its learning rate is 0, so nothing moves (as with --lr 0).
        TrainCommand.Run(context, new TrainSettings("art", "tokens.safetensors", "untouched", BatchSize: 2, LearningRate: 0, Shuffle: false));
        TrainCommand.Run(context, new TrainSettings("art", "tokens.safetensors", "warmup", BatchSize: 2, Shuffle: false, Schedule: "linear", WarmupRatio: 1));
        TrainCommand.Run(context, new TrainSettings("art", "tokens.safetensors", "constant", BatchSize: 2, Shuffle: false));
        Assert.Equal(Logits("untouched"), Logits("warmup"));
        Assert.NotEqual(Logits("untouched"), Logits("constant"));

        // Two epochs of one step, linear decay without warm-up: lr 0.003, then 0.0015, so not the constant run's second step.
        var decayed = TrainCommand.Run(context, new TrainSettings("art", "tokens.safetensors", "decay", Epochs: 2, BatchSize: 2, Shuffle: false, Schedule: "linear"));
        TrainCommand.Run(context, new TrainSettings("art", "tokens.safetensors", "constant2", Epochs: 2, BatchSize: 2, Shuffle: false));
        Assert.Equal(2, decayed.Steps);
        Assert.NotEqual(Logits("constant2"), Logits("decay"));
        Assert.NotEqual(Logits("constant"), Logits("decay"));

        CliRunner.Run(work.Path, "train", "art", "--data", "tokens.safetensors", "--out", "bad", "--schedule", "step").ExpectFailure("--schedule");
        CliRunner.Run(work.Path, "train", "art", "--data", "tokens.safetensors", "--out", "bad", "--warmup-ratio", "1.5").ExpectFailure("--warmup-ratio");
    }

    /// <summary>
    /// Token-classification artifacts ("art", 3 classes, top layer trainable) and tokens.safetensors from rows of 6 ids
    /// (labels: id % 3, -100 on special tokens and padding); returns the attention mask.
    /// </summary>
    private long[] TokenClassificationSetup(TempDir work, long[] ids, int rows)
    {
        File.Copy(fx["model.onnx"], work["model.onnx"]);
        File.Copy(fx["vocab.txt"], work["vocab.txt"]);
        CliRunner.Run(work.Path, "artifacts", "model.onnx", "--out", "art", "--head", "token-classification", "--classes", "3", "--trainable-layers", "1", "--lr", "0.003").Expect(0);
        long[] mask = ids.Select(i => i == 0 ? 0L : 1L).ToArray();
        long[] labels = ids.Select(i => i is 0 or 101 or 102 ? -100L : i % 3).ToArray();
        new OnnxTune.Training.SafeTensors.SafeTensorsFile(
        [
            OnnxTune.Training.SafeTensors.SafeTensor.FromInt64s("input_ids", ids, rows, 6),
            OnnxTune.Training.SafeTensors.SafeTensor.FromInt64s("attention_mask", mask, rows, 6),
            OnnxTune.Training.SafeTensors.SafeTensor.FromInt64s("token_type_ids", new long[ids.Length], rows, 6),
            OnnxTune.Training.SafeTensors.SafeTensor.FromInt64s("labels", labels, rows, 6),
        ]).Write(work["tokens.safetensors"]);
        return mask;
    }

    [GeneratedRegex(@"graph nodes: inference (\d+), training (\d+)")]
    private static partial Regex NodeCounts();

    [GeneratedRegex(@"examples (\d+), loss ([0-9.]+), accuracy ([0-9.]+) \(\d+/\d+\), macro-F1 ([0-9.]+)")]
    private static partial Regex EvalLine();

    [GeneratedRegex(@"examples (\d+), loss ([0-9.]+)")]
    private static partial Regex EvalLoss();
}
