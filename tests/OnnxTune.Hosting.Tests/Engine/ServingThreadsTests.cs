using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests.Engine;

public class ServingThreadsTests
{
    [Fact]
    public void Default_serving_threads_leave_the_training_budget_free()
    {
        var options = new OnDeviceFineTuningOptions { TrainingThreads = 1 };
        Assert.Equal(Math.Max(1, Environment.ProcessorCount - 1), InferenceSessionFactory.ServingThreads(options));
        options.TrainingThreads = 1024;
        Assert.Equal(1, InferenceSessionFactory.ServingThreads(options));
        options.InferenceThreads = 3;
        Assert.Equal(3, InferenceSessionFactory.ServingThreads(options));
    }

    [Fact]
    public void Training_runs_in_the_idle_class_only_when_serving_and_training_threads_oversubscribe_the_cores_unless_set()
    {
        var cores = Environment.ProcessorCount;
        Assert.False(new OnDeviceFineTuningOptions { TrainingThreads = 1 }.UsesIdleTrainingPriority() && cores > 1);
        Assert.True(new OnDeviceFineTuningOptions { TrainingThreads = 1, InferenceThreads = cores }.UsesIdleTrainingPriority());
        Assert.True(new OnDeviceFineTuningOptions { TrainingThreads = cores }.UsesIdleTrainingPriority()); // serving keeps at least 1
        Assert.False(new OnDeviceFineTuningOptions { TrainingThreads = 1, InferenceThreads = cores, TrainingIdlePriority = false }.UsesIdleTrainingPriority());
        Assert.True(new OnDeviceFineTuningOptions { TrainingThreads = 1, InferenceThreads = 1, TrainingIdlePriority = true }.UsesIdleTrainingPriority());
    }
}
