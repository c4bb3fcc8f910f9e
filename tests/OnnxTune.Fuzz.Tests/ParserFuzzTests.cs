using System.Diagnostics;
using OnnxTune.Fuzz.Tests.Fuzzing;
using Xunit.Abstractions;

namespace OnnxTune.Fuzz.Tests;

/// <summary>
/// Seeded, deterministic fuzzing of every file parser: each mutated file parses or throws an
/// <see cref="OnnxTuneException"/>, within a per-case time and allocation bound. CI runs
/// <see cref="FuzzRunner.DefaultIterations"/> cases per target; ONNXTUNE_FUZZ_ITERATIONS, ONNXTUNE_FUZZ_SEED and
/// ONNXTUNE_FUZZ_CASE=target:index scale, vary or replay a run (see README, "Fuzzing").
/// </summary>
[Trait("Category", "Fuzz")]
[Collection(FuzzCollection.Name)]
public sealed class ParserFuzzTests(ITestOutputHelper output)
{
    public static TheoryData<string> Targets => new(CreateAll().Select(t => t.Name));

    private static IEnumerable<FuzzTarget> CreateAll() =>
    [
        new SafeTensorsTarget(), new OnnxTarget(external: false), new OnnxTarget(external: true), new CheckpointTarget(),
        new ManifestTarget(), new FeedbackColumnTarget(), new GoldenSetTarget(), new TextDataTarget(), new TensorDataTarget(),
    ];

    [Theory]
    [MemberData(nameof(Targets))]
    public void Mutated_files_parse_or_throw_a_typed_error(string targetName)
    {
        var target = CreateAll().Single(t => t.Name == targetName);
        var root = Path.Combine(Path.GetTempPath(), $"onnxtune-fuzz-{Environment.ProcessId}-{targetName}-{Guid.NewGuid():N}");
        var retainedBefore = GC.GetTotalMemory(forceFullCollection: true);
        var workingSetBefore = Process.GetCurrentProcess().WorkingSet64;
        try
        {
            var report = FuzzRunner.Run(target, root);
            var retainedGrowth = GC.GetTotalMemory(forceFullCollection: true) - retainedBefore;
            var workingSetGrowth = Process.GetCurrentProcess().WorkingSet64 - workingSetBefore;
            output.WriteLine($"{report.Target}: {report.Cases} cases (seed {FuzzRunner.BaseSeed}) in {report.Elapsed.TotalSeconds:F1} s: {report.Parsed} parsed, {report.Rejected} typed errors, " +
                $"{report.Failures.Count} failures; slowest case {report.MaxCaseTime.TotalMilliseconds:F0} ms, largest allocation {report.MaxCaseAllocation / 1024.0:F0} KiB, " +
                $"retained growth {retainedGrowth / 1048576.0:F1} MiB, working-set growth {workingSetGrowth / 1048576.0:F0} MiB");
            Assert.True(report.Failures.Count == 0, $"{report.Failures.Count} fuzz failure(s) in {report.Target}:\n" + string.Join("\n", report.Failures));
            Assert.True(retainedGrowth < 64L << 20, $"The run retained {retainedGrowth:N0} bytes.");
            Assert.True(workingSetGrowth < 1L << 30, $"The working set grew by {workingSetGrowth:N0} bytes.");
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }
}

/// <summary>The fuzz run measures process-wide memory, so it runs alone (after the parallel tests).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FuzzCollection
{
    public const string Name = "Fuzz (not parallel)";
}
