using OnnxTune.Training.Loops;

namespace OnnxTune.Training.Caching;

/// <summary>Losses and timing of one <see cref="CachedTrainer.TrainEpoch"/>.</summary>
/// <param name="Losses">Loss of every train step, in order.</param>
/// <param name="OptimizerSteps">Optimizer updates applied.</param>
/// <param name="Examples">Examples trained on.</param>
/// <param name="Cache">What the cache build before the epoch did (all reused after the first epoch).</param>
/// <param name="Elapsed">Wall time of the training steps (the cache build excluded).</param>
public sealed record CachedEpochResult(IReadOnlyList<float> Losses, int OptimizerSteps, int Examples, CacheBuildResult Cache, TimeSpan Elapsed)
{
    /// <summary>Mean of <see cref="Losses"/>.</summary>
    public float MeanLoss => Losses.Count == 0 ? float.NaN : Losses.Average();
}

/// <summary>
/// Trains suffix artifacts (built from <see cref="Autodiff.Partitioning.PrefixSplit.Suffix"/>) on cached frontier
/// activations: each batch is the examples' cached tensors stacked, so an epoch costs only the trainable part.
/// </summary>
public sealed class CachedTrainer
{
    private readonly TrainingEngine _session;
    private readonly ActivationCache _cache;

    /// <summary>Pairs a session over suffix artifacts with the activation cache of the same split.</summary>
    /// <param name="session">Session over artifacts built from the suffix model.</param>
    /// <param name="cache">Cache of the split's prefix.</param>
    /// <param name="gradientAccumulationSteps">Train steps per optimizer update.</param>
    /// <exception cref="ActivationCacheException">The artifacts' data inputs are not the cache's tensors.</exception>
    public CachedTrainer(TrainingEngine session, ActivationCache cache, int gradientAccumulationSteps = 1)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentOutOfRangeException.ThrowIfLessThan(gradientAccumulationSteps, 1);
        var inputs = session.Manifest.Inputs.Select(i => i.Name).Order(StringComparer.Ordinal);
        var cached = cache.TensorNames.Order(StringComparer.Ordinal);
        if (!inputs.SequenceEqual(cached))
            throw new ActivationCacheException(
                $"The artifacts read [{string.Join(", ", session.Manifest.Inputs.Select(i => i.Name))}] but the cache holds [{string.Join(", ", cache.TensorNames)}]; build the artifacts from the suffix of the same split.");
        _session = session;
        _cache = cache;
        GradientAccumulationSteps = gradientAccumulationSteps;
    }

    /// <summary>Train steps per optimizer update (the last update of an epoch may cover fewer).</summary>
    public int GradientAccumulationSteps { get; }

    /// <summary>
    /// Caches whatever examples of <paramref name="batches"/> are missing, then runs one train step per batch in the
    /// given order and an optimizer update every <see cref="GradientAccumulationSteps"/> steps and at the end.
    /// </summary>
    public CachedEpochResult TrainEpoch(IReadOnlyList<IReadOnlyList<TrainingExample>> batches, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(batches);
        var build = _cache.Build(batches.SelectMany(b => b));
        var examples = batches.Sum(b => b.Count);
        // The loop finishes each step before it asks for the next batch, so one set of buffers serves every batch.
        var buffers = new BatchStackBuffers();
        var run = TrainingLoop.Run(_session, TrainingBatches.FromEpochs(examples, batches.Count, _ => batches.Select(b => _cache.CreateBatch(b, buffers))),
            new TrainingLoopOptions { GradientAccumulationSteps = GradientAccumulationSteps, RecordStepLosses = true }, cancellationToken);
        return new CachedEpochResult(run.StepLosses, (int)run.Updates, examples, build, run.Elapsed);
    }

    /// <summary>Forward + loss on cached examples (cached first when missing).</summary>
    public EvalResult Evaluate(IReadOnlyList<TrainingExample> batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        _cache.Build(batch);
        return _session.EvalStep(_cache.CreateBatch(batch));
    }
}
