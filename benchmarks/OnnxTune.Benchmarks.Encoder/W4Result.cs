using System.Text.Json;
using System.Text.Json.Serialization;

namespace OnnxTune.Benchmarks.Encoder;

/// <summary>One W4 JSON line (the PyTorch and TorchSharp peers print the same fields).</summary>
internal sealed record W4Result
{
    public string Mode { get; init; } = "w4";
    public string System { get; init; } = "";
    public string Version { get; init; } = "";
    public int TrainExamples { get; init; }
    public int Epochs { get; init; }
    public int BatchSize { get; init; }
    public long Steps { get; init; }
    /// <summary>From the loaded model and token ids to trained weights (split, cache and export included for OnnxTune).</summary>
    public double WallSeconds { get; init; }
    /// <summary>Training examples × epochs ÷ wall time.</summary>
    public double ExamplesPerSecond { get; init; }
    /// <summary>VmHWM after training, reset before the model was loaded.</summary>
    public double PeakRssMb { get; init; }
    public int TestExamples { get; init; }
    public double TestAccuracy { get; init; }
    public IReadOnlyList<double> EpochLosses { get; init; } = [];
    public IReadOnlyList<double> EpochSeconds { get; init; } = [];
    public IReadOnlyDictionary<string, double> Parts { get; init; } = new Dictionary<string, double>();
    public double EvalSeconds { get; init; }
    /// <summary>VmHWM at the end of each phase (OnnxTune only): where the peak is reached.</summary>
    public IReadOnlyDictionary<string, double>? PeakRssAfterMb { get; init; }
    public int Threads { get; init; }
    public string Notes { get; init; } = "";

    public static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };
}
