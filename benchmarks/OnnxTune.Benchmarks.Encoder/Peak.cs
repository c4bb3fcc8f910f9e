namespace OnnxTune.Benchmarks.Encoder;

/// <summary>Peak resident set size (<c>VmHWM</c>), resettable through <c>/proc/self/clear_refs</c>.</summary>
internal static class Peak
{
    public static void Reset()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // the peak then covers the whole process
    }

    public static double Megabytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) / 1024.0;
        return double.NaN;
    }
}
