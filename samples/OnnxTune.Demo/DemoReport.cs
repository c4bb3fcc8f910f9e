using OnnxTune.Hosting;
using OnnxTune.Samples;

namespace OnnxTune.Demo;

/// <summary>Everything the demo prints: the story, one table row per round (from <see cref="FineTuningEvents"/>), the verdict.</summary>
internal sealed class DemoReport(DemoSettings settings)
{
    private readonly List<double> _roundSeconds = [];
    private readonly List<double> _swapMs = [];
    private double _startKnown, _startNew, _endKnown, _endNew;
    private int _clean, _cleanPromoted, _poisoned, _poisonRejected;
    private double? _lastSwapMs;

    public void Data(Clinc150 data, DemoData story)
    {
        Console.WriteLine($"CLINC150: {data.Intents.Count} intents in {data.Domains.Count} domains.");
        Console.WriteLine($"  known at launch: {string.Join(", ", story.KnownDomains)}");
        Console.WriteLine($"  launched later:  {string.Join(", ", story.NewDomains)}");
    }

    public void ShippedModel(int examples, bool reused, TimeSpan elapsed) =>
        Console.WriteLine($"Shipped model: all-MiniLM-L6-v2 + head, top {settings.TrainableLayers} encoder layers trainable, trained offline on {examples} utterances of the known domains " +
                          $"({(reused ? "reused from an earlier run" : "built now")}, {elapsed.TotalSeconds:F1} s).");

    public void Start(double known, double fresh)
    {
        (_startKnown, _startNew, _endKnown, _endNew) = (known, fresh, known, fresh);
        Console.WriteLine();
        Console.WriteLine($"Serving the shipped model: known domains {known:P1}, new domains {fresh:P1} (CLINC150 test utterances, {settings.TestPerIntent} per intent).");
        Console.WriteLine($"Each wave: {settings.WaveSize} text corrections (~{settings.OldShare:P0} about known domains) plus the held-out share; library defaults for training and gating.");
        Console.WriteLine();
        Console.WriteLine(Header);
        Console.WriteLine(new string('-', Header.Length));
        Console.WriteLine($"{0,5} | {"(shipped model)",-26} | {"",10} | {"",-58} | {"base",7} | {known,7:P1} | {fresh,7:P1} | {"",7} | {"",6}");
    }

    private static string Header =>
        $"{"round",5} | {"feedback (domain)",-26} | {"train loss",10} | {"gate (held-out, golden: serving → candidate)",-58} | {"serving",7} | {"known",7} | {"new",7} | {"round",7} | {"swap",6}";

    public void Swapped(ModelSwappedEventArgs e)
    {
        _lastSwapMs = e.SwapDuration.TotalMilliseconds;
        _swapMs.Add(e.SwapDuration.TotalMilliseconds);
    }

    public void Round(Wave wave, int training, int heldOut, RoundCompletedEventArgs round, double known, double fresh, int? version)
    {
        (_endKnown, _endNew) = (known, fresh);
        _roundSeconds.Add(round.Duration.TotalSeconds);
        var promoted = round.Outcome == RoundOutcome.Promoted;
        if (wave.Poisoned) { _poisoned++; if (!promoted) _poisonRejected++; }
        else { _clean++; if (promoted) _cleanPromoted++; }
        var feedback = $"+{training}+{heldOut}h {wave.Domain}";
        var swap = promoted && _lastSwapMs is { } ms ? $"{ms,4:F0}ms" : "-";
        _lastSwapMs = null;
        var st = round.Statistics;
        _trainSeconds.Add(st.TrainTime.TotalSeconds);
        Console.WriteLine($"{wave.Number,5} | {feedback,-26} | {round.Decision?.TrainLoss ?? double.NaN,10:F4} | {Gate(round),-58} | {(version is { } v ? $"v{v}" : "base"),7} | {known,7:P1} | {fresh,7:P1} | {round.Duration.TotalSeconds,6:F1}s | {swap,6}");
    }

    /// <summary>Where the last round's time went (RoundCompletedEventArgs.Statistics).</summary>
    public void RoundParts(RoundCompletedEventArgs round)
    {
        var st = round.Statistics;
        Console.WriteLine($"{"",5} |   {st.NewRecords} new + {st.ReplayRecords} replayed, {st.Steps} steps, epoch losses [{string.Join(", ", st.EpochLosses.Select(l => l.ToString("F3", System.Globalization.CultureInfo.InvariantCulture)))}]; " +
            $"encode {st.EncodeTime.TotalSeconds:F1}s, teacher {st.TeacherTime.TotalSeconds:F1}s, prefix cache {st.PrefixCacheTime.TotalSeconds:F1}s ({st.PrefixCacheComputed} run, {st.PrefixCacheReused} reused), " +
            $"train {st.TrainTime.TotalSeconds:F1}s, export {st.ExportTime.TotalSeconds:F1}s, gate {st.GateTime.TotalSeconds:F1}s, promotion {st.PromotionTime.TotalSeconds:F1}s");
    }

    private readonly List<double> _trainSeconds = [];

    /// <summary>Median training-loop time of the rounds so far.</summary>
    public double MedianTrainSeconds => _trainSeconds.Count == 0 ? double.NaN : _trainSeconds.Order().ElementAt(_trainSeconds.Count / 2);

    public void Deleted(int records) =>
        Console.WriteLine($"{"",5} | the app deletes the buggy client's feedback: {records} records (IFeedbackStore.DeleteUserAsync); no later round trains on them");

    public void Example(string text, TextPrediction p)
    {
        if (_examples++ == 0) Console.WriteLine();
        Console.WriteLine($"  \"{text}\" → {p.Label} ({p.Confidence:P0}, {(p.Version is { } v ? $"v{v}" : "base")})");
    }

    private int _examples;

    /// <summary>Prints the summary and whether the run met the demo's targets.</summary>
    public bool Summary(TimeSpan wall)
    {
        var knownDelta = (_endKnown - _startKnown) * 100;
        var ok = knownDelta >= -1.0 && _endNew >= 0.90 && _cleanPromoted >= Math.Ceiling(0.95 * _clean) && _poisonRejected == _poisoned;
        Console.WriteLine();
        Console.WriteLine($"Summary: new domains {_startNew:P1} → {_endNew:P1}; known domains {_startKnown:P1} → {_endKnown:P1} ({knownDelta:+0.0;-0.0} points); " +
                          $"{_cleanPromoted}/{_clean} clean rounds promoted, {_poisonRejected}/{_poisoned} poisoned rounds rejected; " +
                          $"median round {Median(_roundSeconds):F1} s (training loop {MedianTrainSeconds:F1} s), median swap {Median(_swapMs):F0} ms; wall time {wall.TotalSeconds:F0} s.");
        Console.WriteLine(ok
            ? "OK: known domains within 1 point, new domains at least 90%, clean rounds promoted, poison rejected."
            : "CHECK FAILED: targets are known domains within 1 point, new domains at least 90%, 95% of clean rounds promoted, every poisoned round rejected.");
        return ok;
    }

    private static string Gate(RoundCompletedEventArgs e)
    {
        if (e.Outcome == RoundOutcome.Failed || e.Decision is not { } d) return "FAILED: " + e.Error?.Message;
        static string Pair(double? a, double? b) => a is { } x && b is { } y ? $"{x * 100:F1}→{y * 100:F1}" : "n/a";
        var metrics = $"{Pair(d.Serving.HeldOutMetric, d.Candidate.HeldOutMetric)}, {Pair(d.Serving.GoldenMetric, d.Candidate.GoldenMetric)}";
        if (d.Promoted) return "promoted  " + metrics;
        return $"REJECTED by {string.Join("+", d.Checks.Where(c => !c.Passed).Select(c => c.Gate))}  {metrics}";
    }

    private static double Median(List<double> values) => values.Count == 0 ? double.NaN : values.Order().ElementAt(values.Count / 2);
}
