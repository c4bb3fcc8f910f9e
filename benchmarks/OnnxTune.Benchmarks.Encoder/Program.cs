using System.Globalization;
using System.Text.Json;
using OnnxTune.Benchmarks.Encoder;

// Issue 14, W4 and W5 (benchmarks/README.md):
//   prepare --work DIR [--train-limit N] [--test-limit N] [--epochs N] [--seed N]   shared model, token ids, batch plan
//   w4 --work DIR [--spinning never|during-runs|always]                             the OnnxTune side of W4 (one JSON line)
//   w5 --work DIR [--rounds 3] [--records 400] [--threads 2]                        hosted rounds (one JSON line each)
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: OnnxTune.Benchmarks.Encoder prepare|w4|w5 --work DIR [options] (see benchmarks/README.md)");
    return args.Length == 0 ? 2 : 0;
}
var work = Arg("--work") ?? throw new ArgumentException("--work DIR is required.");
switch (args[0])
{
    case "prepare":
        var s = W4Data.Prepare(work, Int("--train-limit"), Int("--test-limit"), Int("--epochs") ?? 3, Int("--seed") ?? 1);
        Console.Error.WriteLine($"[prepare] {s.TrainExamples} train / {s.TestExamples} test utterances, {s.Epochs} epoch(s), {s.Trainable.Count} trainable tensors, in {work}");
        return 0;
    case "w4":
        // --spinning never|during-runs|always: an A/B knob (default: TrainingEngineOptions' default).
        var r = W4OnnxTune.Run(work, Arg("--spinning") switch
        {
            null => null,
            "never" => OnnxTune.Training.ThreadSpinning.Never,
            "during-runs" => OnnxTune.Training.ThreadSpinning.DuringRuns,
            "always" => OnnxTune.Training.ThreadSpinning.Always,
            var v => throw new ArgumentException($"--spinning: unknown value '{v}' (never, during-runs, always)."),
        });
        Console.WriteLine(JsonSerializer.Serialize(r, W4Result.Json));
        return 0;
    case "w5":
        return await W5HostedRound.RunAsync(work, Int("--rounds") ?? 3, Int("--records") ?? 400, Int("--threads") ?? 2);
    default:
        Console.Error.WriteLine($"unknown command '{args[0]}' (prepare, w4, w5)");
        return 2;
}

string? Arg(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

int? Int(string name) => Arg(name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : null;
