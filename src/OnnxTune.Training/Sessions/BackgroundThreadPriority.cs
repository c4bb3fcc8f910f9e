using System.Runtime.InteropServices;

namespace OnnxTune.Training.Sessions;

/// <summary>
/// Lowers the scheduling priority of the calling thread for background training, so that the app's own threads
/// (serving requests) win the cores whenever both are runnable. Linux: the thread's nice value
/// (<c>setpriority(PRIO_PROCESS, tid, n)</c>); threads it creates afterwards — ONNX Runtime's intra-op pool of a
/// session opened on it — inherit it. Windows: <see cref="ThreadPriority.BelowNormal"/> (pool threads keep normal
/// priority there). Other systems: nothing. An unprivileged process cannot raise the priority again, so call it
/// only on a thread that is dedicated to the work and ends with it.
/// </summary>
internal static partial class BackgroundThreadPriority
{
    private const int PrioProcess = 0;

    /// <summary>Lowers the thread to at least <paramref name="niceness"/> (1–19; 0 leaves it alone); tells whether it now runs at that priority or lower.</summary>
    public static bool Lower(int niceness)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(niceness);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(niceness, 19);
        if (niceness == 0) return false;
        if (OperatingSystem.IsWindows())
        {
            Thread.CurrentThread.Priority = ThreadPriority.BelowNormal;
            return true;
        }
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            // Never raises it: a thread (or process) that already runs nicer keeps its value.
            if (Current() is { } current && current >= niceness) return true;
            return SetPriority(PrioProcess, GetTid(), niceness) == 0;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false;
        }
    }

    /// <summary>
    /// Moves the calling thread to the idle scheduling class (Linux <c>SCHED_IDLE</c>: it runs only on cores no
    /// normal thread wants, and a waking normal thread preempts it at once; no privilege needed, and threads it
    /// creates inherit it). Windows: <see cref="ThreadPriority.Lowest"/>. Tells whether it took effect.
    /// </summary>
    public static bool Idle()
    {
        if (OperatingSystem.IsWindows())
        {
            Thread.CurrentThread.Priority = ThreadPriority.Lowest;
            return true;
        }
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            var param = 0; // struct sched_param { int sched_priority; }, 0 for SCHED_IDLE
            return SchedSetScheduler(GetTid(), SchedIdle, ref param) == 0;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false;
        }
    }

    /// <summary>True when the calling thread runs in the idle scheduling class (Linux).</summary>
    public static bool IsIdle()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try { return SchedGetScheduler(GetTid()) == SchedIdle; }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { return false; }
    }

    private const int SchedIdle = 5;

    [LibraryImport("libc", EntryPoint = "sched_setscheduler", SetLastError = true)]
    private static partial int SchedSetScheduler(int pid, int policy, ref int param);

    [LibraryImport("libc", EntryPoint = "sched_getscheduler", SetLastError = true)]
    private static partial int SchedGetScheduler(int pid);

    /// <summary>The calling thread's nice value (Linux), or null.</summary>
    public static int? Current()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            Marshal.SetLastPInvokeError(0);
            var value = GetPriority(PrioProcess, GetTid());
            return value == -1 && Marshal.GetLastPInvokeError() != 0 ? null : value;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return null;
        }
    }

    [LibraryImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static partial int SetPriority(int which, int who, int prio);

    [LibraryImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    private static partial int GetPriority(int which, int who);

    [LibraryImport("libc", EntryPoint = "gettid")]
    private static partial int GetTid();
}
