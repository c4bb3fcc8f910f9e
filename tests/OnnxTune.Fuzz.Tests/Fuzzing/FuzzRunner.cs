using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace OnnxTune.Fuzz.Tests.Fuzzing;

/// <summary>Outcome counts of one target's run.</summary>
internal sealed record FuzzReport(string Target, int Cases, int Parsed, int Rejected, TimeSpan Elapsed, long MaxCaseAllocation, TimeSpan MaxCaseTime, List<string> Failures);

/// <summary>
/// Runs a target's cases: each either parses or throws an <see cref="OnnxTuneException"/>; anything else, a case
/// that allocates more than <see cref="MaxCaseAllocationBytes"/> or runs longer than <see cref="MaxCaseTime"/>, is a
/// failure reported with its seed, mutation and a copy of its files.
/// </summary>
internal static class FuzzRunner
{
    /// <summary>Cases per target in the CI run (9 targets: 10,800 files). ONNXTUNE_FUZZ_ITERATIONS overrides it.</summary>
    public const int DefaultIterations = 1200;

    public const long MaxCaseAllocationBytes = 32L << 20;

    public static readonly TimeSpan MaxCaseTime = TimeSpan.FromSeconds(2);

    /// <summary>A case still running after this is reported as a hang (the run stops).</summary>
    public static readonly TimeSpan HangTime = TimeSpan.FromSeconds(20);

    public static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("ONNXTUNE_FUZZ_ITERATIONS"), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : DefaultIterations;

    public static int BaseSeed =>
        int.TryParse(Environment.GetEnvironmentVariable("ONNXTUNE_FUZZ_SEED"), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var s) ? s : 20261201;

    /// <summary>ONNXTUNE_FUZZ_CASE=target:index replays one case.</summary>
    public static (string Target, int Index)? OnlyCase
    {
        get
        {
            var v = Environment.GetEnvironmentVariable("ONNXTUNE_FUZZ_CASE");
            var i = v?.LastIndexOf(':') ?? -1;
            if (v is null || i < 1) return null;
            return int.TryParse(v[(i + 1)..], CultureInfo.InvariantCulture, out var index) ? (v[..i], index) : null;
        }
    }

    /// <summary>The case seed: a stable hash (FNV-1a) of the base seed, target name and case index.</summary>
    public static int CaseSeed(int baseSeed, string target, int index)
    {
        unchecked
        {
            var h = 2166136261u;
            foreach (var b in Encoding.UTF8.GetBytes($"{baseSeed}/{target}/{index}"))
                h = (h ^ b) * 16777619u;
            return (int)h;
        }
    }

    public static FuzzReport Run(FuzzTarget target, string root)
    {
        var baseSeed = BaseSeed;
        var only = OnlyCase;
        var first = 0;
        var count = Iterations;
        if (only is { } o)
        {
            if (o.Target != target.Name) return new FuzzReport(target.Name, 0, 0, 0, TimeSpan.Zero, 0, TimeSpan.Zero, []);
            first = o.Index;
            count = 1;
        }
        var work = Path.Combine(root, target.Name);
        Directory.CreateDirectory(work);
        target.Setup(Path.Combine(work, "seed"));
        var caseDir = target.FixedCaseDirectory ?? Path.Combine(work, "case");
        Directory.CreateDirectory(caseDir);

        var failures = new List<string>();
        int parsed = 0, rejected = 0;
        long maxAlloc = 0;
        var maxTime = TimeSpan.Zero;
        var current = -1;
        var currentStart = 0L;
        string currentMutation = "";
        var total = Stopwatch.StartNew();

        void Loop()
        {
            for (var index = first; index < first + count; index++)
            {
                var seed = CaseSeed(baseSeed, target.Name, index);
                var m = new Mutator(new Random(seed));
                var input = target.Generate(m);
                currentMutation = m.Describe();
                foreach (var (name, bytes) in input.Files)
                {
                    var path = Path.Combine(caseDir, name);
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    File.WriteAllBytes(path, bytes);
                }
                Volatile.Write(ref currentStart, Stopwatch.GetTimestamp());
                Volatile.Write(ref current, index);
                var allocBefore = GC.GetAllocatedBytesForCurrentThread();
                Exception? bad = null;
                try
                {
                    target.Parse(input, caseDir);
                    parsed++;
                }
                catch (OnnxTuneException e) when (!string.IsNullOrWhiteSpace(e.Message))
                {
                    rejected++;
                }
                catch (Exception e)
                {
                    bad = e;
                }
                var elapsed = Stopwatch.GetElapsedTime(currentStart);
                var alloc = GC.GetAllocatedBytesForCurrentThread() - allocBefore;
                Volatile.Write(ref current, -1);
                maxAlloc = Math.Max(maxAlloc, alloc);
                if (elapsed > maxTime) maxTime = elapsed;
                string? why = bad is not null ? $"untyped {bad.GetType().FullName}: {bad.Message}\n      at {FirstFrames(bad)}"
                    : alloc > MaxCaseAllocationBytes ? $"allocated {alloc:N0} bytes (limit {MaxCaseAllocationBytes:N0})"
                    : elapsed > MaxCaseTime ? $"took {elapsed.TotalMilliseconds:F0} ms (limit {MaxCaseTime.TotalMilliseconds:F0})"
                    : null;
                if (why is not null && failures.Count < 25)
                    failures.Add(Describe(target, baseSeed, index, seed, currentMutation, why, Save(target, index, input)));
                foreach (var name in input.Files.Keys)
                    TryDelete(Path.Combine(caseDir, name));
            }
        }

        var task = Task.Factory.StartNew(Loop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        while (!task.Wait(100))
        {
            var index = Volatile.Read(ref current);
            if (index >= 0 && Stopwatch.GetElapsedTime(Volatile.Read(ref currentStart)) > HangTime)
            {
                failures.Add(Describe(target, baseSeed, index, CaseSeed(baseSeed, target.Name, index), currentMutation,
                    $"still running after {HangTime.TotalSeconds:F0} s (hang)", "(not saved)"));
                return new FuzzReport(target.Name, index - first, parsed, rejected, total.Elapsed, maxAlloc, maxTime, failures);
            }
        }
        task.GetAwaiter().GetResult();
        return new FuzzReport(target.Name, count, parsed, rejected, total.Elapsed, maxAlloc, maxTime, failures);
    }

    private static string Describe(FuzzTarget target, int baseSeed, int index, int seed, string mutation, string why, string saved) =>
        $"[{target.Name} case {index}, case seed {seed}] {why}\n    mutation: {(mutation.Length > 600 ? mutation[..600] + "..." : mutation)}\n    files: {saved}\n" +
        $"    replay: ONNXTUNE_FUZZ_SEED={baseSeed} ONNXTUNE_FUZZ_CASE={target.Name}:{index} dotnet test tests/OnnxTune.Fuzz.Tests --filter Category=Fuzz";

    private static string FirstFrames(Exception e) =>
        string.Join("\n      at ", (e.StackTrace ?? "").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).Take(4).Select(l => l.StartsWith("at ", StringComparison.Ordinal) ? l[3..] : l));

    private static string Save(FuzzTarget target, int index, FuzzInput input)
    {
        var dir = Path.Combine(Path.GetTempPath(), "onnxtune-fuzz-failures", $"{target.Name}-{index}");
        try
        {
            Directory.CreateDirectory(dir);
            foreach (var (name, bytes) in input.Files)
            {
                var path = Path.Combine(dir, name);
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                File.WriteAllBytes(path, bytes);
            }
            if (input.Text is { } text) File.WriteAllText(Path.Combine(dir, "column.json"), text);
            return dir;
        }
        catch (IOException) { return "(could not save)"; }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
