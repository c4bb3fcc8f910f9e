using System.Globalization;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Labels;
using OnnxTune.Text.Tokenization;
using OnnxTune.Training;

namespace OnnxTune.Cli.Text;

/// <summary>A tokenized, labelled text data set for one artifacts folder, cut into training batches.</summary>
internal sealed class TextTask
{
    private readonly ArtifactManifest _manifest;
    private readonly EncodedTexts _encoded;
    private readonly float[]? _targets;

    private TextTask(ArtifactManifest manifest, TextModelSettings settings, LabelMap? labels, EncodedTexts encoded, float[]? targets)
    {
        _manifest = manifest;
        Settings = settings;
        Labels = labels;
        _encoded = encoded;
        _targets = targets;
    }

    public TextModelSettings Settings { get; }

    public LabelMap? Labels { get; }

    public int Count => _encoded.Count;

    /// <summary>Class index of each example (classification), or null (regression).</summary>
    public int[]? ClassIndices { get; private init; }

    /// <summary>Reads the text settings of an artifacts folder and tokenizes and labels <paramref name="dataPath"/>.</summary>
    public static TextTask Load(string artifactsDir, ArtifactManifest manifest, string dataPath)
    {
        var settings = TextModelSettings.FromProperties(manifest.Properties)
            ?? throw new OnnxTuneException($"Artifacts folder '{artifactsDir}' was not built with a text head (--head), so it cannot read text data from '{dataPath}'; use a safetensors file, or rebuild the artifacts with --head.");
        if (settings.Kind == TaskHeadKind.TokenClassification)
            throw new OnnxTuneException("Text files (CSV / JSON Lines) carry one label per text; a token-classification head needs per-token labels. Give a safetensors file with input_ids, attention_mask, token_type_ids and labels [batch, sequence] (-100 where no label applies).");
        if (settings.VocabularyFile is null)
            throw new OnnxTuneException($"Artifacts folder '{artifactsDir}' records no tokenizer vocabulary (manifest property {TextModelSettings.VocabularyKey}); rebuild it with --vocab.");
        var vocab = Path.Combine(artifactsDir, settings.VocabularyFile);
        var encoder = BertTextEncoder.FromVocabulary(vocab, new BertTextEncoderOptions { MaxLength = settings.MaxLength, LowerCase = settings.LowerCase });
        var labels = settings.LabelsFile is null ? null : LabelMap.Load(Path.Combine(artifactsDir, settings.LabelsFile));

        var examples = TextDataFile.Read(dataPath);
        var texts = examples.Select(e => e.Text).ToList();
        if (settings.Kind == TaskHeadKind.Regression)
        {
            var targets = new float[examples.Count * settings.Outputs];
            for (var i = 0; i < examples.Count; i++)
            {
                var e = examples[i];
                if (e.Values is null || e.Values.Length != settings.Outputs)
                    throw new OnnxTuneException($"{dataPath}:{e.Line}: the regression head predicts {settings.Outputs} value(s); the label is '{e.Label ?? "(missing)"}'.");
                if (!e.Values.All(float.IsFinite))
                    throw new OnnxTuneException($"{dataPath}:{e.Line}: the label '{e.Label}' is not finite.");
                e.Values.CopyTo(targets, i * settings.Outputs);
            }
            return new TextTask(manifest, settings, labels, encoder.EncodeAll(texts), targets);
        }
        var classes = new int[examples.Count];
        for (var i = 0; i < examples.Count; i++)
        {
            var e = examples[i];
            if (e.Label is null)
                throw new OnnxTuneException($"{dataPath}:{e.Line}: the example has no label; training needs a 'label' field (JSON Lines) or a 'label' column in the CSV header (see docs/file-formats.md).");
            if (labels is not null)
            {
                if (!labels.TryGetIndex(e.Label, out classes[i]))
                    throw new OnnxTuneException($"{dataPath}:{e.Line}: label '{e.Label}' is not in the label map ({labels.Count} labels, {settings.LabelsFile}).");
            }
            else if (!int.TryParse(e.Label, NumberStyles.Integer, CultureInfo.InvariantCulture, out classes[i]) || classes[i] < 0 || classes[i] >= settings.Outputs)
                throw new OnnxTuneException($"{dataPath}:{e.Line}: without a label map (--labels) labels must be class indices 0..{settings.Outputs - 1}; got '{e.Label}'.");
        }
        return new TextTask(manifest, settings, labels, encoder.EncodeAll(texts, classes), null) { ClassIndices = classes };
    }

    /// <summary>Length-bucketed batches (shuffled with <paramref name="seed"/>, shortest first without).</summary>
    public IEnumerable<(TrainingBatch Batch, TextBatch Text)> Batches(int batchSize, int? seed)
    {
        foreach (var text in _encoded.Batches(batchSize, seed))
            yield return (ToTrainingBatch(text), text);
    }

    public int BatchCount(int batchSize) => (Count + batchSize - 1) / batchSize;

    private TrainingBatch ToTrainingBatch(TextBatch text)
    {
        var batch = new TrainingBatch();
        foreach (var input in _manifest.Inputs)
        {
            Memory<long> data = input.Name switch
            {
                BertInputNames.InputIds => text.InputIds,
                BertInputNames.AttentionMask => text.AttentionMask,
                BertInputNames.TokenTypeIds => text.TokenTypeIds,
                _ => throw new OnnxTuneException($"The model input '{input.Name}' is not one the text pipeline fills ({BertInputNames.InputIds}, {BertInputNames.AttentionMask}, {BertInputNames.TokenTypeIds})."),
            };
            batch.Add(input.Name, data, text.Shape);
        }
        if (_targets is not null)
        {
            var n = Settings.Outputs;
            var labels = new float[text.BatchSize * n];
            for (var r = 0; r < text.BatchSize; r++)
                _targets.AsSpan(text.ExampleIndices[r] * n, n).CopyTo(labels.AsSpan(r * n));
            batch.WithLabels(labels, text.BatchSize, n);
        }
        else
            batch.WithLabels(text.Labels!, text.LabelShape);
        return batch;
    }
}
