namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Per-model factory of the text services (keyed by model name): the feedback encoder is the BERT one when the
/// manifest records a tokenizer and the tensor pass-through otherwise; the classifier exists only for text models.
/// </summary>
internal sealed class TextModelServices(FineTunedModel model)
{
    private readonly Lazy<TextModelContext?> _context = new(
        () => TextModelContext.TryCreate(model.Name, model.Manifest, model.Options.ArtifactsPath),
        LazyThreadSafetyMode.ExecutionAndPublication);

    public TextModelContext? Context => _context.Value;

    public IFeedbackEncoder CreateEncoder() =>
        Context is { } text ? new BertFeedbackEncoder(text) : new TensorFeedbackEncoder(model.Name);

    public ITextClassifier CreateClassifier() =>
        new TextClassifier(
            Context ?? throw new TextModelUnavailableException(model.Name,
                $"Model '{model.Name}' has no tokenizer: its artifacts manifest ('{model.Options.ArtifactsPath}') records no 'onnxtune.tokenizer.vocab' (build the artifacts with onnxtune artifacts --head ... and a vocab.txt)."),
            model.Handle,
            model.Schema.Labels);
}
