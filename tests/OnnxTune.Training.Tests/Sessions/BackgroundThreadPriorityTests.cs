using OnnxTune.Training.Sessions;

namespace OnnxTune.Training.Tests.Sessions;

public class BackgroundThreadPriorityTests
{
    [Fact]
    public void Lowered_thread_and_the_threads_it_starts_run_at_the_niceness()
    {
        if (!OperatingSystem.IsLinux()) return;
        int? before = null, lowered = null, child = null, other = null;
        var took = false;
        var thread = new Thread(() =>
        {
            before = BackgroundThreadPriority.Current();
            took = BackgroundThreadPriority.Lower(7);
            lowered = BackgroundThreadPriority.Current();
            // ONNX Runtime's intra-op pool threads are created like this one, by the thread that opens the session.
            var inner = new Thread(() => child = BackgroundThreadPriority.Current());
            inner.Start();
            inner.Join();
        });
        thread.Start();
        thread.Join();
        var sibling = new Thread(() => other = BackgroundThreadPriority.Current());
        sibling.Start();
        sibling.Join();

        Assert.True(took);
        Assert.NotNull(before);
        Assert.Equal(Math.Max(before!.Value, 7), lowered);
        Assert.Equal(lowered, child);
        Assert.Equal(before, other); // the rest of the process keeps its priority
    }

    [Fact]
    public void Zero_leaves_the_thread_alone_and_out_of_range_is_rejected()
    {
        Assert.False(BackgroundThreadPriority.Lower(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => BackgroundThreadPriority.Lower(20));
        Assert.Throws<ArgumentOutOfRangeException>(() => BackgroundThreadPriority.Lower(-1));
    }
}
