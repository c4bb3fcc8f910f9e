using System.CommandLine;

namespace OnnxTune.Demo;

/// <summary>The demo's knobs (all have defaults; <c>--help</c> lists them).</summary>
internal sealed record DemoSettings
{
    public int Rounds { get; init; } = 5;
    public int WaveSize { get; init; } = 400;
    public double OldShare { get; init; } = 0.5;
    public int TrainPerIntent { get; init; } = 40;
    public int GoldenPerIntent { get; init; } = 5;
    public int TestPerIntent { get; init; } = 10;
    public int TrainableLayers { get; init; } = 2;
    public bool Poison { get; init; } = true;
    public double? DistillationWeight { get; init; }
    public double? EncoderLearningRateScale { get; init; }
    public double? BaseReplayShare { get; init; }
    public bool PrefixCache { get; init; } = true;
    public string? OutDir { get; init; }
}

/// <summary>Parses the demo's arguments with System.CommandLine.</summary>
internal static class DemoCommandLine
{
    public static Task<int> InvokeAsync(string[] args, Func<DemoSettings, Task<int>> run)
    {
        var d = new DemoSettings();
        var fast = new Option<bool>("--fast") { Description = "3 feedback waves instead of 5 (the 5 new domains launch over them)." };
        var rounds = new Option<int>("--rounds") { Description = "Feedback waves; the 5 new domains launch evenly over them.", DefaultValueFactory = _ => d.Rounds };
        var wave = new Option<int>("--wave") { Description = "Training records per wave (= MinNewFeedback).", DefaultValueFactory = _ => d.WaveSize };
        var oldShare = new Option<double>("--old-share") { Description = "Share of a wave's feedback about the known domains.", DefaultValueFactory = _ => d.OldShare };
        var perIntent = new Option<int>("--train-per-intent") { Description = "Utterances per known intent the shipped model is trained on.", DefaultValueFactory = _ => d.TrainPerIntent };
        var golden = new Option<int>("--golden-per-intent") { Description = "Utterances per known intent in the golden set (the gate's forgetting check).", DefaultValueFactory = _ => d.GoldenPerIntent };
        var layers = new Option<int>("--trainable-layers") { Description = "Top encoder layers trained besides the head.", DefaultValueFactory = _ => d.TrainableLayers };
        var noPoison = new Option<bool>("--no-poison") { Description = "Skip the buggy client's random-label wave." };
        var outDir = new Option<string?>("--out") { Description = "Output folder (default artifacts/demo)." };
        var distill = new Option<double?>("--distillation") { Description = "Override DistillationWeight (library default 1; 0 turns distillation off), for ablations." };
        var encoderScale = new Option<double?>("--encoder-lr-scale") { Description = "Override EncoderLearningRateScale (library default 0.1), for ablations." };
        var replayShare = new Option<double?>("--base-replay-share") { Description = "Override BaseReplayShare (library default 0.5; 0: no replay of the shipped data), for ablations." };
        var noCache = new Option<bool>("--no-prefix-cache") { Description = "Train rounds through the whole encoder instead of on the frozen-prefix cache (UsePrefixCache = false), for comparison." };
        var root = new RootCommand("OnnxTune demo: MiniLM + head learning new intents from text feedback, on-device, without forgetting the known ones.")
        {
            fast, rounds, wave, oldShare, perIntent, golden, layers, noPoison, outDir, distill, encoderScale, replayShare, noCache,
        };
        root.SetAction((r, _) => run(new DemoSettings
        {
            Rounds = r.GetValue(fast) ? 3 : r.GetValue(rounds),
            WaveSize = r.GetValue(wave),
            OldShare = r.GetValue(oldShare),
            TrainPerIntent = r.GetValue(perIntent),
            GoldenPerIntent = r.GetValue(golden),
            TrainableLayers = r.GetValue(layers),
            Poison = !r.GetValue(noPoison),
            OutDir = r.GetValue(outDir),
            DistillationWeight = r.GetValue(distill),
            EncoderLearningRateScale = r.GetValue(encoderScale),
            BaseReplayShare = r.GetValue(replayShare),
            PrefixCache = !r.GetValue(noCache),
        }));
        return root.Parse(args).InvokeAsync();
    }
}
