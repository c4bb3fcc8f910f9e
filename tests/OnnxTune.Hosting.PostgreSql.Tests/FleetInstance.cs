using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace OnnxTune.Hosting.PostgreSql.Tests;

/// <summary>One run of OnnxTune.Hosting.PostgreSql.FleetTarget with its stdout lines collected and a stdin for commands.</summary>
internal sealed class FleetInstance : IDisposable
{
    private readonly Process _process;
    private readonly List<string> _lines = [];
    private readonly StringBuilder _stderr = new();

    private FleetInstance(string name, Process process)
    {
        Name = name;
        _process = process;
    }

    public string Name { get; }

    public static FleetInstance Start(string name, params string[] args)
    {
        var dll = typeof(FleetInstance).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .SingleOrDefault(a => a.Key == "OnnxTune.Hosting.PostgreSql.FleetTarget")?.Value;
        Assert.True(File.Exists(dll), $"OnnxTune.Hosting.PostgreSql.FleetTarget is not built (expected '{dll}')");
        var info = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { dll! }.Concat(args)) info.ArgumentList.Add(a);
        var child = new FleetInstance(name, new Process { StartInfo = info });
        child._process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (child._lines) child._lines.Add(e.Data);
        };
        child._process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (child._stderr) child._stderr.AppendLine(e.Data);
        };
        child._process.Start();
        child._process.BeginOutputReadLine();
        child._process.BeginErrorReadLine();
        return child;
    }

    /// <summary>The muxer running these tests, else DOTNET_HOST_PATH, else DOTNET_ROOT, else dotnet from PATH.</summary>
    private static string DotnetHost()
    {
        var self = Environment.ProcessPath;
        if (self is not null && Path.GetFileName(self) == "dotnet") return self;
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host)) return host;
        if (Environment.GetEnvironmentVariable("DOTNET_ROOT") is { Length: > 0 } root && File.Exists(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        return "dotnet";
    }

    public bool HasExited => _process.HasExited;

    public void Send(string command)
    {
        _process.StandardInput.WriteLine(command);
        _process.StandardInput.Flush();
    }

    public List<string> Lines()
    {
        lock (_lines) return [.. _lines];
    }

    public string Log()
    {
        lock (_stderr) return _stderr.ToString();
    }

    public string Diagnostics()
    {
        var lines = Lines();
        var err = Log();
        return $"[{Name}] exited: {_process.HasExited}; last stdout lines:\n{string.Join("\n", lines.Skip(Math.Max(0, lines.Count - 15)))}\nstderr (tail):\n{err[Math.Max(0, err.Length - 3000)..]}";
    }

    /// <summary>Waits for a line matching <paramref name="match"/> at index <paramref name="from"/> or later; returns it.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout, int from = 0)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var exited = _process.HasExited;
            if (exited) await _process.WaitForExitAsync();
            var hit = Lines().Skip(from).FirstOrDefault(match);
            if (hit is not null) return hit;
            Assert.False(exited, $"{Name} exited before printing the expected line; " + Diagnostics());
            Assert.True(DateTime.UtcNow < deadline, $"{Name} did not print the expected line within {timeout.TotalSeconds} s; " + Diagnostics());
            await Task.Delay(10);
        }
    }

    /// <summary>SIGKILL on Linux: no shutdown code runs, the lease is not released.</summary>
    public void Kill() => _process.Kill(entireProcessTree: true);

    public async Task WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
    }
}
