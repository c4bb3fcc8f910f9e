using System.ComponentModel.DataAnnotations;

namespace OnnxTune.Hosting;

/// <summary>
/// How the built-in gate judges a candidate and which feedback a round may use (configuration section
/// <c>OnDeviceFineTuning[:&lt;name&gt;]:Gate</c>). The golden-set tolerance stays
/// <see cref="OnDeviceFineTuningOptions.GoldenTolerance"/>.
/// </summary>
public sealed class GateOptions
{
    /// <summary>
    /// Gets or sets the non-inferiority margin of the held-out test: how much lower (absolute accuracy) the candidate
    /// may be than the serving model on the same held-out records before it is called worse.
    /// </summary>
    /// <remarks>
    /// The held-out gate compares candidate and serving model record by record on one held-out sample. Only the
    /// discordant pairs carry information: <c>b</c> records the serving model gets right and the candidate wrong,
    /// <c>c</c> the reverse, <c>m = b + c</c>, <c>n</c> records in all. The accuracy difference is
    /// <c>(c − b) / n = (m / n)·(2p − 1)</c> with <c>p = c / m</c> (McNemar's conditional view). The gate takes the
    /// one-sided Wilson score lower bound <c>p_L</c> of <c>p</c> at <see cref="HeldOutConfidence"/> and passes when
    /// <c>(m / n)·(2·p_L − 1) ≥ −margin</c>: the candidate is promoted when the held-out sample shows, at that
    /// confidence, that it is at most the margin worse. A candidate that agrees with the serving model everywhere
    /// (<c>m = 0</c>) passes, and on a large sample so does one that is merely as good within the sample's noise; on a
    /// small one the bound is wide, so a few discordant records fail it (n = 7, one record the candidate gets wrong:
    /// −0.14), and such rounds wait to be retried (<see cref="MaxRejectedRetries"/>) as held-out records accumulate.
    /// </remarks>
    /// <value>The default value is 0.02.</value>
    [Range(0.0, 1.0)]
    public double HeldOutMargin { get; set; } = 0.02;

    /// <summary>Gets or sets the one-sided confidence of the held-out non-inferiority bound (see <see cref="HeldOutMargin"/>).</summary>
    /// <value>The default value is 0.95.</value>
    [Range(0.5, 0.9999)]
    public double HeldOutConfidence { get; set; } = 0.95;

    /// <summary>
    /// Gets or sets how far (absolute) the candidate's accuracy on one class may fall below the serving model's on the
    /// same records (golden set plus held-out sample, by true label) before the candidate fails the per-class floor.
    /// Only classes with at least <see cref="PerClassMinSupport"/> records are judged, so a targeted flip of one class
    /// fails even when overall accuracy holds.
    /// </summary>
    /// <value>The default value is 0.15.</value>
    [Range(0.0, 1.0)]
    public double PerClassTolerance { get; set; } = 0.15;

    /// <summary>Gets or sets the fewest records (golden set plus held-out sample) a class needs to be judged by the per-class floor.</summary>
    /// <value>The default value is 20.</value>
    [Range(1, 10_000_000)]
    public int PerClassMinSupport { get; set; } = 20;

    /// <summary>Gets or sets how many of the most recent held-out records the gate scores.</summary>
    /// <value>The default value is 2000.</value>
    [Range(1, 10_000_000)]
    public int HeldOutSampleRecent { get; set; } = 2000;

    /// <summary>
    /// Gets or sets how many older held-out records (beyond <see cref="HeldOutSampleRecent"/>) the gate adds, spread
    /// evenly over the classes (a deterministic sample), so rare and early classes stay judged while the cost stays bounded.
    /// </summary>
    /// <value>The default value is 1000.</value>
    [Range(0, 10_000_000)]
    public int HeldOutSampleOlder { get; set; } = 1000;

    /// <summary>
    /// Gets or sets how many records of the artifacts' replay set (manifest property <c>onnxtune.replay</c>) serve as
    /// the golden reference when <see cref="OnDeviceFineTuningOptions.GoldenSetPath"/> is not set (a deterministic sample).
    /// </summary>
    /// <value>The default value is 1000.</value>
    [Range(1, 10_000_000)]
    public int GoldenReplaySample { get; set; } = 1000;

    /// <summary>
    /// Gets or sets how many more rounds may train a rejected round's new records again as new. Until a promotion
    /// confirms them they are kept out of replay; after this many further rejections they are kept in the store but no
    /// longer trained on (deleting the user that sent bad feedback lets the rest through).
    /// </summary>
    /// <value>The default value is 2.</value>
    [Range(0, 1000)]
    public int MaxRejectedRetries { get; set; } = 2;

    /// <summary>
    /// Gets or sets the largest share of one user's records among a round's new records. A user's records beyond the
    /// cap wait for later rounds (they are not dropped). The cap applies when records of at least two users wait;
    /// records without a user id are not capped (the app wrote them).
    /// </summary>
    /// <value>The default value is 0.25 (1 turns the cap off).</value>
    [Range(0.01, 1.0)]
    public double MaxUserShare { get; set; } = 0.25;
}
