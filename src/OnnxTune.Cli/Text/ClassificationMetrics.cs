namespace OnnxTune.Cli.Text;

/// <summary>Accuracy and macro-F1 (scikit-learn's definition: unweighted mean of per-class F1 over every class that occurs as a label or a prediction; 0 where precision + recall is 0).</summary>
internal sealed class ClassificationMetrics
{
    private readonly Dictionary<int, (int Tp, int Fp, int Fn)> _counts = [];

    public int Total { get; private set; }

    public int Correct { get; private set; }

    public double Accuracy => Total == 0 ? 0 : (double)Correct / Total;

    public void Add(int label, int predicted)
    {
        Total++;
        if (label == predicted)
        {
            Correct++;
            Update(label, tp: 1, fp: 0, fn: 0);
            return;
        }
        Update(label, 0, 0, 1);
        Update(predicted, 0, 1, 0);
    }

    public double MacroF1
    {
        get
        {
            if (_counts.Count == 0) return 0;
            return _counts.Values.Average(c => c.Tp == 0 ? 0.0 : 2.0 * c.Tp / ((2.0 * c.Tp) + c.Fp + c.Fn));
        }
    }

    private void Update(int cls, int tp, int fp, int fn)
    {
        _counts.TryGetValue(cls, out var c);
        _counts[cls] = (c.Tp + tp, c.Fp + fp, c.Fn + fn);
    }

    /// <summary>Index of the largest of <paramref name="scores"/> (first on ties, like torch.argmax).</summary>
    public static int ArgMax(ReadOnlySpan<float> scores)
    {
        var best = 0;
        for (var i = 1; i < scores.Length; i++)
            if (scores[i] > scores[best]) best = i;
        return best;
    }
}
