namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Named steps of a promotion where a crash test (OnnxTune.Hosting.KillTarget) can kill the process outright.
/// Without a hook installed (every real app) a hit costs one null check.
/// </summary>
internal static class CrashPoints
{
    /// <summary>The version folder was renamed into place; the pointer still names the previous version.</summary>
    public const string AfterVersionFolder = "after-version-folder";

    /// <summary>The pointer names the new version; its promoted marker and the watermark are not written yet.</summary>
    public const string AfterPointer = "after-pointer";

    /// <summary>The watermark moved past the promoted round's feedback.</summary>
    public const string AfterWatermark = "after-watermark";

    /// <summary>A pruned version was renamed out of the listing but not yet deleted.</summary>
    public const string DuringPrune = "during-prune";

    /// <summary>Called with the step name at each point; set only by crash tests.</summary>
    public static Action<string>? Hook { get; set; }

    public static void Hit(string point) => Hook?.Invoke(point);
}
