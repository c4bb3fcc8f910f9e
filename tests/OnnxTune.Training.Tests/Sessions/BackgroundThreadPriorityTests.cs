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

    [Fact]
    public void Idle_thread_and_the_onnx_runtime_pool_it_opens_run_in_the_idle_class_and_the_rest_do_not()
    {
        if (!OperatingSystem.IsLinux()) return;
        bool took = false, idle = false, other = true;
        int idleTasksBefore = IdleTasks(), idleTasksWithPool = 0;
        var model = Google.Protobuf.MessageExtensions.ToByteArray(new OnnxTune.Onnx.Models.MlpModelBuilder(4).Layer(3).Build());
        var thread = new Thread(() =>
        {
            took = BackgroundThreadPriority.Idle();
            idle = BackgroundThreadPriority.IsIdle();
            // ONNX Runtime's intra-op pool threads are created by the thread that opens the session.
            using var options = new Microsoft.ML.OnnxRuntime.SessionOptions { IntraOpNumThreads = 3 };
            using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(model, options);
            idleTasksWithPool = IdleTasks();
        });
        thread.Start();
        thread.Join();
        var sibling = new Thread(() => other = BackgroundThreadPriority.IsIdle());
        sibling.Start();
        sibling.Join();

        Assert.True(took);
        Assert.True(idle);
        Assert.True(idleTasksWithPool >= idleTasksBefore + 3, $"idle tasks: {idleTasksBefore} before, {idleTasksWithPool} with the pool (the opening thread + 2 pool threads expected)");
        Assert.False(other);
        Assert.False(BackgroundThreadPriority.IsIdle());
    }

    // Threads of this process in SCHED_IDLE (policy 5: field 41 of /proc/self/task/<tid>/stat).
    private static int IdleTasks() => Directory.GetDirectories("/proc/self/task").Count(t =>
    {
        try
        {
            var stat = File.ReadAllText(Path.Combine(t, "stat"));
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields[41 - 3] == "5";
        }
        catch (IOException) { return false; }
    });
}
