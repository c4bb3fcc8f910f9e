namespace OnnxTune.Training.Tests.TestUtilities;

public static class Fixtures
{
    /// <summary>The repository's <c>tests/fixtures</c> folder, found by walking up from the test binaries.</summary>
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "tests", "fixtures");
                if (Directory.Exists(candidate)) return candidate;
            }
            throw new DirectoryNotFoundException("tests/fixtures was not found above " + AppContext.BaseDirectory);
        }
    }
}
