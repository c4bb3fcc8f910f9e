using OnnxTune.Training.Schedules;

namespace OnnxTune.Training.Tests.Schedules;

public sealed class ScheduleTests
{
    [Fact]
    public void Linear_warmup_then_decay_matches_transformers()
    {
        // get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=10), lr 0.1:
        // lambda(s) = s/2 for s<2, else max(0, (10-s)/8)
        var s = LearningRateSchedules.LinearWithWarmup(0.1, 2, 10);
        double[] expected = [0, 0.05, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.0375, 0.025, 0.0125, 0, 0];
        for (var i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], s.LearningRateAt(i), 12);
    }

    [Fact]
    public void Cosine_warmup_then_half_cosine_matches_transformers()
    {
        var s = LearningRateSchedules.CosineWithWarmup(1.0, 2, 10);
        Assert.Equal(0.0, s.LearningRateAt(0), 12);
        Assert.Equal(0.5, s.LearningRateAt(1), 12);
        Assert.Equal(1.0, s.LearningRateAt(2), 12);
        Assert.Equal(0.5, s.LearningRateAt(6), 12); // progress 0.5 → cos(π/2)
        Assert.Equal(0.5 * (1 + Math.Cos(Math.PI * 3 / 8)), s.LearningRateAt(5), 12);
        Assert.Equal(0.0, s.LearningRateAt(10), 12);
        // transformers does not clamp progress past the end: the cosine rises again.
        Assert.Equal(0.5 * (1 + Math.Cos(Math.PI * 1.25)), s.LearningRateAt(12), 12);
        var twoCycles = LearningRateSchedules.CosineWithWarmup(1.0, 0, 8, numCycles: 1.0);
        Assert.Equal(1.0, twoCycles.LearningRateAt(8), 12);
    }

    [Fact]
    public void Constant_schedules()
    {
        Assert.Equal(0.3, LearningRateSchedules.Constant(0.3).LearningRateAt(1000));
        var w = LearningRateSchedules.ConstantWithWarmup(0.4, 4);
        Assert.Equal(0.1, w.LearningRateAt(1), 12);
        Assert.Equal(0.4, w.LearningRateAt(4), 12);
        Assert.Equal(0.4, w.LearningRateAt(400), 12);
    }

    [Fact]
    public void State_round_trips_and_unknown_kinds_are_refused()
    {
        foreach (var s in new[] { LearningRateSchedules.Constant(0.2), LearningRateSchedules.ConstantWithWarmup(0.2, 3), LearningRateSchedules.LinearWithWarmup(0.2, 3, 9), LearningRateSchedules.CosineWithWarmup(0.2, 3, 9, 0.7) })
        {
            var r = LearningRateSchedules.FromState(s.State);
            for (var i = 0; i < 12; i++) Assert.Equal(s.LearningRateAt(i), r.LearningRateAt(i));
        }
        Assert.Contains("'exp'", Assert.Throws<CheckpointFormatException>(() => LearningRateSchedules.FromState(new("exp", 1))).Message);
    }
}
