using OnnxTune.Training.Sessions;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Training.Tests.TestUtilities;
using static OnnxTune.Training.Tests.TestUtilities.LinearRegressionArtifacts;

namespace OnnxTune.Training.Tests;

public sealed class TrainingEngineThreadingTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(0, ExecutionMode.ORT_SEQUENTIAL)]
    [InlineData(1, ExecutionMode.ORT_SEQUENTIAL)]
    [InlineData(2, ExecutionMode.ORT_PARALLEL)]
    public void Parallel_executor_only_with_more_than_one_inter_op_thread(int interOp, ExecutionMode expected) =>
        Assert.Equal(expected, OrtSessionFactory.ExecutionModeFor(interOp));

    [Fact]
    public void Pool_threads_do_not_spin_unless_asked()
    {
        var entries = OrtSessionFactory.SessionConfigEntries(new TrainingEngineOptions().Spinning);
        Assert.Contains(new KeyValuePair<string, string>("session.intra_op.allow_spinning", "0"), entries);
        Assert.Contains(new KeyValuePair<string, string>("session.inter_op.allow_spinning", "0"), entries);
        Assert.Equal([new KeyValuePair<string, string>("session.force_spinning_stop", "1")],
            OrtSessionFactory.SessionConfigEntries(ThreadSpinning.DuringRuns));
        Assert.Empty(OrtSessionFactory.SessionConfigEntries(ThreadSpinning.Always));
    }

    [Fact]
    public void Thread_settings_do_not_change_results_and_run_time_is_counted()
    {
        var path = _dir.Combine("artifacts");
        Create(path, new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 0.05 });
        var rng = new Random(3);
        var x = Enumerable.Range(0, 6 * In).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var t = Enumerable.Range(0, 6 * Out).Select(_ => (float)rng.NextDouble()).ToArray();
        var batch = new TrainingBatch().Add("x", x, 6, In).WithLabels(t, 6, Out);

        float[] Train(TrainingEngineOptions options)
        {
            using var s = TrainingEngine.Open(path, options);
            Assert.Equal(0, s.TrainRunTicks);
            for (var i = 0; i < 3; i++)
            {
                s.TrainStep(batch);
                s.OptimizerStep();
            }
            Assert.True(s.TrainRunTicks > 0);
            Assert.True(s.OptimizerRunTicks > 0);
            return s.GetParameter("W");
        }

        var quiet = Train(new TrainingEngineOptions { IntraOpThreads = 1, InterOpThreads = 1 });
        var spinning = Train(new TrainingEngineOptions { IntraOpThreads = 2, InterOpThreads = 2, Spinning = ThreadSpinning.DuringRuns });
        var planned = Train(new TrainingEngineOptions { IntraOpThreads = 1, InterOpThreads = 1, MemoryPattern = true });
        Assert.NotEqual(InitialW, quiet);
        for (var i = 0; i < quiet.Length; i++) Assert.Equal(quiet[i], spinning[i], 6);
        Assert.Equal(quiet, planned);
    }

    [Fact]
    public void The_memory_pattern_is_off_unless_turned_on()
    {
        Assert.False(new TrainingEngineOptions().MemoryPattern);
        using (var planned = OrtSessionFactory.CreateOptions(new OrtSessionSettings { MemoryPattern = true }, out _)) Assert.True(planned.EnableMemoryPattern);
        using (var on = OrtSessionFactory.CreateOptions(new OrtSessionSettings(), out _)) Assert.True(on.EnableMemoryPattern);
        using var off = OrtSessionFactory.CreateOptions(new OrtSessionSettings { MemoryPattern = false }, out _);
        Assert.False(off.EnableMemoryPattern);
    }
}
