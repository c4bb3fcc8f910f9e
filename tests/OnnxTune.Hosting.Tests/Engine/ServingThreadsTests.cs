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
}
