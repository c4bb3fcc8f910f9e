using System.ComponentModel.DataAnnotations;

namespace OnnxTune.Hosting;

/// <summary>
/// The drift watch (configuration section <c>OnDeviceFineTuning[:&lt;name&gt;]:DriftWatch</c>): after a promotion it
/// compares the new version's live signals with the version it replaced and rolls back automatically when one of
/// them crosses its threshold. Signals: the rate of user corrections to the version's predictions (feedback with
/// <see cref="Feedback.Prediction"/>), the shift of its predicted-class distribution on recent traffic away from the
/// golden (or replay) set's label distribution, and its mean top-1 confidence. Each needs
/// <see cref="MinPredictions"/> predictions of both versions; the correction rate also needs
/// <see cref="MinCorrections"/> corrections of the new version.
/// </summary>
public sealed class DriftWatchOptions
{
    /// <summary>Gets or sets whether the watch runs (and may roll back).</summary>
    /// <value>The default value is <see langword="true"/>.</value>
    public bool Enabled { get; set; } = true;

    /// <summary>Gets or sets whether a crossed threshold rolls back (otherwise it is only reported).</summary>
    /// <value>The default value is <see langword="true"/>.</value>
    public bool AutoRollback { get; set; } = true;

    /// <summary>Gets or sets how often the watch checks the signals when no new correction woke it.</summary>
    /// <value>The default value is 5 seconds.</value>
    [Range(typeof(TimeSpan), "00:00:00.010", "1.00:00:00")]
    public TimeSpan CheckInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Gets or sets how many recent predictions of each version the distribution and confidence signals use.</summary>
    /// <value>The default value is 1000.</value>
    [Range(10, 10_000_000)]
    public int Window { get; set; } = 1000;

    /// <summary>Gets or sets the fewest predictions of each compared version before any signal may trigger.</summary>
    /// <value>The default value is 100.</value>
    [Range(1, 10_000_000)]
    public int MinPredictions { get; set; } = 100;

    /// <summary>Gets or sets the fewest corrections of the new version before the correction-rate signal may trigger.</summary>
    /// <value>The default value is 10.</value>
    [Range(1, 10_000_000)]
    public int MinCorrections { get; set; } = 10;

    /// <summary>
    /// Gets or sets how many times the previous version's correction rate the new version's must exceed to trigger
    /// (together with <see cref="CorrectionRateIncrease"/>).
    /// </summary>
    /// <value>The default value is 2.</value>
    [Range(1.0, 1000.0)]
    public double CorrectionRateRatio { get; set; } = 2.0;

    /// <summary>Gets or sets the least absolute increase of the correction rate that triggers (corrections per prediction).</summary>
    /// <value>The default value is 0.05.</value>
    [Range(0.0, 1.0)]
    public double CorrectionRateIncrease { get; set; } = 0.05;

    /// <summary>
    /// Gets or sets the largest increase of the total-variation distance between the version's predicted-class
    /// histogram and the reference label histogram (golden set, else the replay set, else the previous version's
    /// predictions) over the previous version's distance.
    /// </summary>
    /// <value>The default value is 0.25.</value>
    [Range(0.0, 1.0)]
    public double MaxDistributionShift { get; set; } = 0.25;

    /// <summary>
    /// Gets or sets whether a crossed <see cref="MaxDistributionShift"/> rolls back. A version that learned new classes
    /// predicts them on new traffic, which shifts its distribution by design, so by default the shift is reported
    /// (event, metric, health) and only the correction rate rolls back.
    /// </summary>
    /// <value>The default value is <see langword="false"/>.</value>
    public bool RollBackOnDistributionShift { get; set; }

    /// <summary>Gets or sets whether a crossed <see cref="MaxConfidenceDrop"/> rolls back (otherwise it is reported only).</summary>
    /// <value>The default value is <see langword="false"/>.</value>
    public bool RollBackOnConfidenceDrop { get; set; }

    /// <summary>Gets or sets the largest fall of mean top-1 confidence (softmax of the scored output) from the previous version.</summary>
    /// <value>The default value is 0.2.</value>
    [Range(0.0, 1.0)]
    public double MaxConfidenceDrop { get; set; } = 0.2;
}
