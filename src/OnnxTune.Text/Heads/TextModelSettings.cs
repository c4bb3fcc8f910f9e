using System.Globalization;

namespace OnnxTune.Text.Heads;

/// <summary>
/// What a text model's artifacts folder records in the manifest <c>Properties</c> so training, evaluation and
/// serving tokenize and label data the same way: the head, the label map file and the tokenizer settings. File
/// names are relative to the artifacts folder.
/// </summary>
public sealed record TextModelSettings
{
    /// <summary>Property: head kind (<c>classification</c>, <c>token-classification</c>, <c>regression</c>).</summary>
    public const string HeadKey = "onnxtune.head";

    /// <summary>Property: number of classes or regression values.</summary>
    public const string OutputsKey = "onnxtune.head.outputs";

    /// <summary>Property: pooling (<c>mean</c>, <c>first</c>).</summary>
    public const string PoolingKey = "onnxtune.head.pooling";

    /// <summary>Property: dropout probability of the head.</summary>
    public const string DropoutKey = "onnxtune.head.dropout";

    /// <summary>Property: the head's output name.</summary>
    public const string OutputNameKey = "onnxtune.head.output";

    /// <summary>Property: label map JSON file (see <c>LabelMap</c>).</summary>
    public const string LabelsKey = "onnxtune.labels";

    /// <summary>Property: WordPiece vocabulary file.</summary>
    public const string VocabularyKey = "onnxtune.tokenizer.vocab";

    /// <summary>Property: longest token sequence, special tokens included.</summary>
    public const string MaxLengthKey = "onnxtune.tokenizer.max_length";

    /// <summary>Property: whether text is lower-cased (<c>true</c>/<c>false</c>).</summary>
    public const string LowerCaseKey = "onnxtune.tokenizer.lower_case";

    /// <summary>Property: the <c>--trainable-layers</c> count used, when any.</summary>
    public const string TrainableLayersKey = "onnxtune.trainable_layers";

    /// <summary>Gets the head kind.</summary>
    public TaskHeadKind Kind { get; init; }

    /// <summary>Gets the number of classes or regression values.</summary>
    public int Outputs { get; init; }

    /// <summary>Gets the pooling of sequence-level heads.</summary>
    public HeadPooling Pooling { get; init; }

    /// <summary>Gets the head dropout.</summary>
    public float Dropout { get; init; }

    /// <summary>Gets the head output name.</summary>
    public string OutputName { get; init; } = "logits";

    /// <summary>Gets the label map file, or null when labels are class indices.</summary>
    public string? LabelsFile { get; init; }

    /// <summary>Gets the vocabulary file, or null when none was recorded.</summary>
    public string? VocabularyFile { get; init; }

    /// <summary>Gets the longest token sequence.</summary>
    /// <value>The default value is 128.</value>
    public int MaxLength { get; init; } = 128;

    /// <summary>Gets whether text is lower-cased.</summary>
    /// <value>The default value is <see langword="true"/>.</value>
    public bool LowerCase { get; init; } = true;

    /// <summary>Gets the number of trainable top layers, when chosen that way.</summary>
    public int? TrainableLayers { get; init; }

    /// <summary>The CLI/manifest spelling of a head kind.</summary>
    public static string KindName(TaskHeadKind kind) => kind switch
    {
        TaskHeadKind.SequenceClassification => "classification",
        TaskHeadKind.TokenClassification => "token-classification",
        _ => "regression",
    };

    /// <summary>Parses <see cref="KindName"/>.</summary>
    /// <exception cref="TaskHeadException">Unknown name.</exception>
    public static TaskHeadKind ParseKind(string name) => name switch
    {
        "classification" => TaskHeadKind.SequenceClassification,
        "token-classification" => TaskHeadKind.TokenClassification,
        "regression" => TaskHeadKind.Regression,
        _ => throw new TaskHeadException($"Unknown head '{name}' (expected classification, token-classification or regression)."),
    };

    /// <summary>The manifest properties.</summary>
    public Dictionary<string, string> ToProperties()
    {
        var p = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [HeadKey] = KindName(Kind),
            [OutputsKey] = Outputs.ToString(CultureInfo.InvariantCulture),
            [PoolingKey] = Pooling == HeadPooling.Mean ? "mean" : "first",
            [DropoutKey] = Dropout.ToString("R", CultureInfo.InvariantCulture),
            [OutputNameKey] = OutputName,
            [MaxLengthKey] = MaxLength.ToString(CultureInfo.InvariantCulture),
            [LowerCaseKey] = LowerCase ? "true" : "false",
        };
        if (LabelsFile is not null) p[LabelsKey] = LabelsFile;
        if (VocabularyFile is not null) p[VocabularyKey] = VocabularyFile;
        if (TrainableLayers is { } k) p[TrainableLayersKey] = k.ToString(CultureInfo.InvariantCulture);
        return p;
    }

    /// <summary>Reads the settings back; null when the properties describe no head.</summary>
    /// <exception cref="TaskHeadException">A property is present but malformed.</exception>
    public static TextModelSettings? FromProperties(IReadOnlyDictionary<string, string> properties)
    {
        ArgumentNullException.ThrowIfNull(properties);
        if (!properties.TryGetValue(HeadKey, out var kind)) return null;
        int Int(string key, int fallback) =>
            !properties.TryGetValue(key, out var v) ? fallback
            : int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) ? i
            : throw new TaskHeadException($"Manifest property '{key}' is '{v}', not an integer.");
        return new TextModelSettings
        {
            Kind = ParseKind(kind),
            Outputs = Int(OutputsKey, 0),
            Pooling = properties.TryGetValue(PoolingKey, out var pool) && pool == "first" ? HeadPooling.First : HeadPooling.Mean,
            Dropout = properties.TryGetValue(DropoutKey, out var d) && float.TryParse(d, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) ? f : 0,
            OutputName = properties.TryGetValue(OutputNameKey, out var o) ? o : "logits",
            LabelsFile = properties.TryGetValue(LabelsKey, out var l) ? l : null,
            VocabularyFile = properties.TryGetValue(VocabularyKey, out var v) ? v : null,
            MaxLength = Int(MaxLengthKey, 128),
            LowerCase = !properties.TryGetValue(LowerCaseKey, out var lc) || lc != "false",
            TrainableLayers = properties.ContainsKey(TrainableLayersKey) ? Int(TrainableLayersKey, 0) : null,
        };
    }
}
