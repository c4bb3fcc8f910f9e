namespace OnnxTune.Training.Schedules;

/// <summary>
/// Learning rate as a function of the number of completed optimizer steps, as in Hugging Face transformers'
/// <c>LambdaLR</c> schedules: update <c>t</c> (1-based) uses <c>LearningRateAt(t - 1)</c>.
/// </summary>
public interface ILearningRateSchedule
{
    /// <summary>The learning rate for the update that follows <paramref name="completedSteps"/> updates.</summary>
    double LearningRateAt(long completedSteps);

    /// <summary>Serializable settings, stored in checkpoints.</summary>
    LearningRateScheduleState State { get; }
}

/// <summary>Settings of a schedule as stored in <c>checkpoint.json</c>.</summary>
/// <param name="Kind"><c>constant</c>, <c>constant-with-warmup</c>, <c>linear</c> or <c>cosine</c>.</param>
/// <param name="BaseLearningRate">Peak learning rate.</param>
/// <param name="WarmupSteps">Linear warm-up length.</param>
/// <param name="TotalSteps">Total training steps (decay schedules).</param>
/// <param name="NumCycles">Cosine: number of waves (0.5 = one half-cosine down to 0).</param>
public sealed record LearningRateScheduleState(string Kind, double BaseLearningRate, long WarmupSteps = 0, long TotalSteps = 0, double NumCycles = 0.5);

/// <summary>Creates the schedules (Hugging Face transformers formulas).</summary>
public static class LearningRateSchedules
{
    /// <summary>A constant learning rate.</summary>
    public static ILearningRateSchedule Constant(double learningRate) =>
        new Schedule(new("constant", learningRate), _ => 1.0);

    /// <summary><c>get_constant_schedule_with_warmup</c>: linear warm-up from 0, then constant.</summary>
    public static ILearningRateSchedule ConstantWithWarmup(double learningRate, long warmupSteps)
    {
        Check(learningRate, warmupSteps, long.MaxValue);
        return new Schedule(new("constant-with-warmup", learningRate, warmupSteps),
            s => s < warmupSteps ? (double)s / Math.Max(1, warmupSteps) : 1.0);
    }

    /// <summary><c>get_linear_schedule_with_warmup</c>: linear warm-up from 0, then linear decay to 0 at <paramref name="totalSteps"/>.</summary>
    public static ILearningRateSchedule LinearWithWarmup(double learningRate, long warmupSteps, long totalSteps)
    {
        Check(learningRate, warmupSteps, totalSteps);
        return new Schedule(new("linear", learningRate, warmupSteps, totalSteps), s =>
            s < warmupSteps
                ? (double)s / Math.Max(1, warmupSteps)
                : Math.Max(0.0, (double)(totalSteps - s) / Math.Max(1, totalSteps - warmupSteps)));
    }

    /// <summary><c>get_cosine_schedule_with_warmup</c>: linear warm-up, then cosine decay (<paramref name="numCycles"/> waves).</summary>
    public static ILearningRateSchedule CosineWithWarmup(double learningRate, long warmupSteps, long totalSteps, double numCycles = 0.5)
    {
        Check(learningRate, warmupSteps, totalSteps);
        return new Schedule(new("cosine", learningRate, warmupSteps, totalSteps, numCycles), s =>
        {
            if (s < warmupSteps) return (double)s / Math.Max(1, warmupSteps);
            var progress = (double)(s - warmupSteps) / Math.Max(1, totalSteps - warmupSteps);
            return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * numCycles * 2.0 * progress)));
        });
    }

    /// <summary>Re-creates a schedule from its stored state.</summary>
    /// <exception cref="CheckpointFormatException">The kind is unknown.</exception>
    public static ILearningRateSchedule FromState(LearningRateScheduleState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        return state.Kind switch
        {
            "constant" => Constant(state.BaseLearningRate),
            "constant-with-warmup" => ConstantWithWarmup(state.BaseLearningRate, state.WarmupSteps),
            "linear" => LinearWithWarmup(state.BaseLearningRate, state.WarmupSteps, state.TotalSteps),
            "cosine" => CosineWithWarmup(state.BaseLearningRate, state.WarmupSteps, state.TotalSteps, state.NumCycles),
            _ => throw new CheckpointFormatException($"Unknown learning-rate schedule kind '{state.Kind}' (expected constant, constant-with-warmup, linear or cosine)."),
        };
    }

    private static void Check(double lr, long warmup, long total)
    {
        if (!double.IsFinite(lr) || lr < 0) throw new ArgumentOutOfRangeException(nameof(lr), lr, "The learning rate must be finite and >= 0.");
        if (warmup < 0) throw new ArgumentOutOfRangeException(nameof(warmup), warmup, "Warm-up steps must be >= 0.");
        if (total < 0) throw new ArgumentOutOfRangeException(nameof(total), total, "Total steps must be >= 0.");
    }

    private sealed class Schedule(LearningRateScheduleState state, Func<long, double> factor) : ILearningRateSchedule
    {
        public LearningRateScheduleState State => state;

        public double LearningRateAt(long completedSteps)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(completedSteps);
            return state.BaseLearningRate * factor(completedSteps);
        }
    }
}
