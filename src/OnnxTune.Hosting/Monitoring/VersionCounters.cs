namespace OnnxTune.Hosting.Internal;

/// <summary>One version's prediction and correction counts, plus a ring of its last predictions (class, top-1 confidence).</summary>
internal sealed class VersionCounters(int window)
{
    private readonly Lock _lock = new();
    private readonly int[] _classes = new int[window];
    private readonly float[] _confidence = new float[window];
    private int _count;
    private int _next;
    private long _predictions;
    private long _corrections;

    public void AddPrediction(int cls, float confidence)
    {
        lock (_lock)
        {
            _predictions++;
            _classes[_next] = cls;
            _confidence[_next] = confidence;
            _next = (_next + 1) % _classes.Length;
            if (_count < _classes.Length) _count++;
        }
    }

    public void AddCorrection()
    {
        lock (_lock) _corrections++;
    }

    public Snapshot Take()
    {
        lock (_lock)
        {
            var hist = new Dictionary<int, double>();
            double conf = 0;
            for (var i = 0; i < _count; i++)
            {
                hist[_classes[i]] = hist.GetValueOrDefault(_classes[i]) + 1;
                conf += _confidence[i];
            }
            foreach (var k in hist.Keys.ToList()) hist[k] /= _count;
            return new Snapshot(_predictions, _corrections, hist, _count == 0 ? 0 : conf / _count);
        }
    }

    /// <param name="Predictions">Predictions served.</param>
    /// <param name="Corrections">Corrections received.</param>
    /// <param name="Histogram">Predicted-class shares over the window.</param>
    /// <param name="MeanConfidence">Mean top-1 confidence over the window.</param>
    internal sealed record Snapshot(long Predictions, long Corrections, IReadOnlyDictionary<int, double> Histogram, double MeanConfidence)
    {
        public double CorrectionRate => Predictions == 0 ? 0 : Corrections / (double)Predictions;
    }

    /// <summary>Total-variation distance between two class distributions (half the L1 distance).</summary>
    public static double TotalVariation(IReadOnlyDictionary<int, double> a, IReadOnlyDictionary<int, double> b)
    {
        double sum = 0;
        foreach (var k in a.Keys.Union(b.Keys)) sum += Math.Abs(a.GetValueOrDefault(k) - b.GetValueOrDefault(k));
        return sum / 2;
    }
}
