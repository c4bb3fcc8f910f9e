namespace OnnxTune.Cli;

/// <summary>Where a command writes and how it resolves relative paths (so tests can run commands in-process).</summary>
internal sealed record CliContext(TextWriter Out, TextWriter Error, string WorkingDirectory, bool ShowProgress = false)
{
    public static CliContext FromConsole() =>
        new(Console.Out, Console.Error, Environment.CurrentDirectory, ShowProgress: !Console.IsOutputRedirected);

    public string FullPath(string path) => Path.GetFullPath(path, WorkingDirectory);
}

/// <summary>A command-line value is out of range or contradicts another flag.</summary>
internal sealed class CliArgumentException(string message) : OnnxTuneException(message);

/// <summary>
/// Text progress for long work: on a terminal it redraws one line (<c>\r</c>); otherwise it stays silent and the
/// command prints only its per-epoch summaries.
/// </summary>
internal sealed class TextProgress(TextWriter writer, bool enabled, string label, int total)
{
    private const int Width = 30;
    private long _lastDraw;

    public void Report(int done, string? suffix = null)
    {
        if (!enabled) return;
        var now = Environment.TickCount64;
        if (done < total && now - _lastDraw < 100) return;
        _lastDraw = now;
        var filled = total == 0 ? Width : (int)((long)done * Width / total);
        writer.Write($"\r{label} [{new string('#', filled)}{new string('-', Width - filled)}] {done}/{total}{(suffix is null ? "" : " " + suffix)}   ");
    }

    public void Clear()
    {
        if (!enabled) return;
        writer.Write('\r' + new string(' ', Width + label.Length + 40) + '\r');
    }
}
