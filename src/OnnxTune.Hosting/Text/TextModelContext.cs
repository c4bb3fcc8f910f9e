using System.Globalization;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Text.Heads;
using OnnxTune.Text.Labels;
using OnnxTune.Text.Tokenization;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// The text side of one model, read from its artifacts manifest: the tokenizer (when the manifest records
/// <c>onnxtune.tokenizer.vocab</c>), the BERT inputs the model has, and the scored output. One instance per model
/// is shared by the feedback encoder and the text classifier; <see cref="BertTextEncoder"/> is safe to share.
/// </summary>
internal sealed class TextModelContext
{
    private TextModelContext(string modelName, BertTextEncoder encoder, string[] inputs, string outputName)
    {
        ModelName = modelName;
        Encoder = encoder;
        Inputs = inputs;
        OutputName = outputName;
    }

    public string ModelName { get; }

    public BertTextEncoder Encoder { get; }

    /// <summary>The BERT inputs the model takes, in manifest order (a subset of input_ids, attention_mask, token_type_ids).</summary>
    public IReadOnlyList<string> Inputs { get; }

    /// <summary>The output holding class scores.</summary>
    public string OutputName { get; }

    /// <summary>Reads the tokenizer settings; null when the manifest records no vocabulary (a tensor model).</summary>
    /// <exception cref="OnnxTuneException">The settings are present but unusable (missing vocabulary file, bad numbers, non-BERT inputs).</exception>
    public static TextModelContext? TryCreate(string modelName, ArtifactManifest manifest, string artifactsPath)
    {
        var p = manifest.Properties;
        if (!p.TryGetValue(TextModelSettings.VocabularyKey, out var vocab)) return null;
        var maxLength = 128;
        if (p.TryGetValue(TextModelSettings.MaxLengthKey, out var ml)
            && (!int.TryParse(ml, NumberStyles.Integer, CultureInfo.InvariantCulture, out maxLength) || maxLength < 2))
            throw new OnnxTuneException($"Model '{modelName}': manifest property '{TextModelSettings.MaxLengthKey}' is '{ml}'; it must be an integer of at least 2.");
        var lowerCase = true;
        if (p.TryGetValue(TextModelSettings.LowerCaseKey, out var lc))
            lowerCase = lc switch
            {
                "true" => true,
                "false" => false,
                _ => throw new OnnxTuneException($"Model '{modelName}': manifest property '{TextModelSettings.LowerCaseKey}' is '{lc}'; expected true or false."),
            };

        var known = new[] { BertInputNames.InputIds, BertInputNames.AttentionMask, BertInputNames.TokenTypeIds };
        foreach (var input in manifest.Inputs)
        {
            if (!known.Contains(input.Name, StringComparer.Ordinal))
                throw new OnnxTuneException(
                    $"Model '{modelName}': the manifest records a tokenizer, but input '{input.Name}' is not a BERT input ({string.Join(", ", known)}); text feedback cannot fill it.");
            if (FeedbackSchema.ParseType(input.ElementType) is not TensorDataType.Int64)
                throw new OnnxTuneException($"Model '{modelName}': input '{input.Name}' is {input.ElementType}; BERT inputs must be int64.");
            if (input.FixedDims.Length != 2)
                throw new OnnxTuneException(
                    $"Model '{modelName}': input '{input.Name}' has shape [{string.Join(",", input.Shape)}]; BERT inputs are [batch, sequence].");
        }
        if (!manifest.Inputs.Any(i => i.Name == BertInputNames.InputIds))
            throw new OnnxTuneException($"Model '{modelName}': the manifest records a tokenizer, but the model has no '{BertInputNames.InputIds}' input.");

        var vocabPath = Path.Combine(artifactsPath, vocab);
        var encoder = BertTextEncoder.FromVocabulary(vocabPath, new BertTextEncoderOptions { MaxLength = maxLength, LowerCase = lowerCase });
        var output = p.TryGetValue(TextModelSettings.OutputNameKey, out var o) && o.Length > 0 ? o
            : manifest.Loss.OutputName.Length > 0 ? manifest.Loss.OutputName
            : manifest.Outputs.Count > 0 ? manifest.Outputs[0].Name
            : throw new OnnxTuneException($"Model '{modelName}': the manifest lists no output to score.");
        return new TextModelContext(modelName, encoder, manifest.Inputs.Select(i => i.Name).ToArray(), output);
    }

    /// <summary>
    /// Label names from the label map file the manifest names (<c>onnxtune.labels</c>, written by
    /// <c>onnxtune artifacts --labels</c>); null when it names none.
    /// </summary>
    /// <exception cref="LabelMapFormatException">The file is missing or malformed.</exception>
    public static IReadOnlyList<string>? LoadLabelNames(ArtifactManifest manifest, string artifactsPath) =>
        manifest.Properties.TryGetValue(TextModelSettings.LabelsKey, out var file)
            ? LabelMap.Load(Path.Combine(artifactsPath, file)).Names
            : null;

    /// <summary>
    /// Encodes one text as a single example (leading dim 1). With <paramref name="bucket"/> &gt; 0 the sequence is
    /// padded with <c>[PAD]</c> (mask 0) up to the next multiple of it, capped at the tokenizer's max length.
    /// </summary>
    public Dictionary<string, TensorData> Encode(string text, int bucket)
    {
        var ids = Encoder.Encode(text);
        var width = ids.Length;
        if (bucket > 0)
            width = Math.Min(Encoder.MaxLength, (ids.Length + bucket - 1) / bucket * bucket);
        var result = new Dictionary<string, TensorData>(Inputs.Count, StringComparer.Ordinal);
        foreach (var name in Inputs)
        {
            var data = new long[width];
            switch (name)
            {
                case BertInputNames.InputIds:
                    for (var i = 0; i < ids.Length; i++) data[i] = ids[i];
                    data.AsSpan(ids.Length).Fill(Encoder.PaddingTokenId);
                    break;
                case BertInputNames.AttentionMask:
                    data.AsSpan(0, ids.Length).Fill(1);
                    break;
                // token_type_ids: all 0 for a single sentence.
            }
            result[name] = TensorData.Int64(data, 1, width);
        }
        return result;
    }

    /// <summary>
    /// Stacks already tokenized texts into one batch (<c>[rows, longest]</c>), padded with <c>[PAD]</c> and mask 0, so
    /// a masked model gives every row the scores it gives the text alone.
    /// </summary>
    public Dictionary<string, TensorData> EncodeBatch(IReadOnlyList<int[]> rows)
    {
        var width = 0;
        foreach (var r in rows) width = Math.Max(width, r.Length);
        var result = new Dictionary<string, TensorData>(Inputs.Count, StringComparer.Ordinal);
        foreach (var name in Inputs)
        {
            var data = new long[rows.Count * width];
            for (var row = 0; row < rows.Count; row++)
            {
                var ids = rows[row];
                var span = data.AsSpan(row * width, width);
                switch (name)
                {
                    case BertInputNames.InputIds:
                        for (var i = 0; i < ids.Length; i++) span[i] = ids[i];
                        span[ids.Length..].Fill(Encoder.PaddingTokenId);
                        break;
                    case BertInputNames.AttentionMask:
                        span[..ids.Length].Fill(1);
                        break;
                }
            }
            result[name] = TensorData.Int64(data, rows.Count, width);
        }
        return result;
    }
}
