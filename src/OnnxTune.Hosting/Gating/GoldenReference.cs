using System.Globalization;

namespace OnnxTune.Hosting.Internal;

/// <summary>The records the golden-set check (and the drift watch's reference distribution) use.</summary>
/// <param name="Source"><c>golden set</c>, <c>replay set</c> or <c>none</c>.</param>
/// <param name="Records">The records (labels resolved), empty for <c>none</c>.</param>
internal sealed record GoldenReference(string Source, IReadOnlyList<FeedbackRecord> Records)
{
    public const string GoldenSet = "golden set";
    public const string ReplaySet = "replay set";
    public const string None = "none";

    /// <summary>Manifest property naming the artifacts' replay set (JSON lines like a golden set, relative to the artifacts folder).</summary>
    public const string ReplayProperty = "onnxtune.replay";

    public static readonly GoldenReference Empty = new(None, []);
}

/// <summary>
/// Loads the golden reference: <see cref="OnDeviceFineTuningOptions.GoldenSetPath"/>, else a class-stratified sample of
/// <see cref="GateOptions.GoldenReplaySample"/> records of the artifacts' replay set (manifest property
/// <c>onnxtune.replay</c>), else nothing. Reloaded when the file changes. Record ids carry the file's fingerprint, so
/// cached predictions never outlive the content they were made on.
/// </summary>
internal sealed class GoldenReferenceSource(FineTunedModel model)
{
    private readonly Lock _lock = new();
    private (string Key, GoldenReference Reference)? _cached;

    /// <summary>The replay set's path (ReplaySetPath, the trained folder's or the artifacts' replay.jsonl, or the manifest property), or null.</summary>
    public string? ReplayPath => model.ReplaySetPath is { } p ? Path.GetFullPath(p) : null;

    public GoldenReference Load()
    {
        string source, path;
        if (model.Options.GoldenSetPath is { Length: > 0 } golden) (source, path) = (GoldenReference.GoldenSet, golden);
        else if (ReplayPath is { } replay && File.Exists(replay)) (source, path) = (GoldenReference.ReplaySet, replay);
        else return GoldenReference.Empty;
        var info = new FileInfo(path);
        var key = string.Create(CultureInfo.InvariantCulture, $"{info.FullName}|{info.LastWriteTimeUtc.Ticks}|{info.Length}");
        lock (_lock)
        {
            if (_cached is { } c && c.Key == key) return c.Reference;
        }
        var fingerprint = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(key)))[..12];
        var list = new List<FeedbackRecord>();
        var i = 0;
        var now = model.TimeProvider.GetUtcNow();
        foreach (var f in FeedbackJson.ReadGoldenSet(path))
        {
            i++;
            try { list.Add(model.Schema.ToRecord(f, $"{(source == GoldenReference.GoldenSet ? "golden" : "replay")}-{fingerprint}-{i}", now, 0)); }
            catch (FeedbackValidationException e) { throw new OnnxTuneException($"{source} '{path}' record {i}: {e.Message}", e); }
        }
        if (source == GoldenReference.ReplaySet && list.Count > model.Options.Gate.GoldenReplaySample)
            list = StratifiedSample.Take(list, r => r.LabelIndex, model.Options.Gate.GoldenReplaySample, seed: 0);
        var reference = new GoldenReference(source, list);
        lock (_lock) _cached = (key, reference);
        return reference;
    }
}
