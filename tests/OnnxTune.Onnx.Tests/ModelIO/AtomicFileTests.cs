using System.Text;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tests.TestUtilities;

namespace OnnxTune.Onnx.Tests.ModelIO;

public sealed class AtomicFileTests
{
    private static string[] Entries(string dir) =>
        Directory.GetFileSystemEntries(dir).Select(p => Path.GetFileName(p)!).Order(StringComparer.Ordinal).ToArray();

    [Fact]
    public void WriteAllText_writes_utf8_and_leaves_no_temp_file()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("a.json");

        AtomicFile.WriteAllText(path, "{\"ä\":1}");

        Assert.Equal(Encoding.UTF8.GetBytes("{\"ä\":1}"), File.ReadAllBytes(path));
        Assert.Equal(["a.json"], Entries(dir.Path));
    }

    [Fact]
    public void WriteAllBytes_replaces_existing_content_completely()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("data.bin");
        File.WriteAllBytes(path, Enumerable.Repeat((byte)7, 1000).ToArray());

        AtomicFile.WriteAllBytes(path, [1, 2, 3]);

        Assert.Equal([1, 2, 3], File.ReadAllBytes(path));
        Assert.Equal(["data.bin"], Entries(dir.Path));
    }

    [Fact]
    public void Missing_directories_are_created()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("x", "y", "z.bin");

        AtomicFile.WriteAllBytes(path, [42]);

        Assert.Equal([42], File.ReadAllBytes(path));
        Assert.Equal(["z.bin"], Entries(dir.Combine("x", "y")));
    }

    [Fact]
    public void Relative_path_is_resolved_against_the_current_directory()
    {
        using var dir = new TempDirectory();
        var relative = Path.GetRelativePath(Environment.CurrentDirectory, dir.Combine("rel.txt"));

        AtomicFile.WriteAllText(relative, "r");

        Assert.Equal("r", File.ReadAllText(dir.Combine("rel.txt")));
    }

    [Fact]
    public void Failing_writer_keeps_old_content_removes_temp_file_and_rethrows()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("state.bin");
        File.WriteAllBytes(path, [9, 9, 9]);
        var boom = new InvalidOperationException("boom");

        var e = Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[4096]);
            throw boom;
        }));

        Assert.Same(boom, e);
        Assert.Equal([9, 9, 9], File.ReadAllBytes(path));
        Assert.Equal(["state.bin"], Entries(dir.Path));
    }

    [Fact]
    public void Failing_writer_for_a_new_file_leaves_nothing_behind()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("new.bin");

        Assert.Throws<IOException>(() => AtomicFile.Write(path, s => throw new IOException("disk full")));

        Assert.Empty(Entries(dir.Path));
    }

    [Fact]
    public void Target_that_is_a_directory_fails_and_leaves_no_temp_file()
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.Combine("taken"));

        Assert.ThrowsAny<IOException>(() => AtomicFile.WriteAllBytes(dir.Combine("taken"), [1]));

        Assert.Equal(["taken"], Entries(dir.Path));
        Assert.True(Directory.Exists(dir.Combine("taken")));
    }

    [Fact]
    public async Task Concurrent_readers_see_either_the_old_or_the_new_full_content()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("swap.bin");
        var a = Enumerable.Repeat((byte)'a', 256 * 1024).ToArray();
        var b = Enumerable.Repeat((byte)'b', 128 * 1024 + 3).ToArray();
        AtomicFile.WriteAllBytes(path, a);
        using var stop = new CancellationTokenSource();
        var reads = 0;
        var reader = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                var got = File.ReadAllBytes(path);
                var expected = got.Length == a.Length ? a : b;
                Assert.Equal(expected.Length, got.Length);
                Assert.True(got.AsSpan().SequenceEqual(expected), $"read {got.Length} bytes of mixed content");
                Interlocked.Increment(ref reads);
            }
        });

        var startedAt = Environment.TickCount64;
        while (Volatile.Read(ref reads) == 0 && !reader.IsCompleted && Environment.TickCount64 - startedAt < 5000) Thread.Yield();
        var readsBeforeWrites = Volatile.Read(ref reads);
        for (var i = 0; i < 40; i++) AtomicFile.WriteAllBytes(path, i % 2 == 0 ? b : a);
        stop.Cancel();
        await reader;

        Assert.True(readsBeforeWrites > 0, "the reader never started");
        Assert.True(reads > readsBeforeWrites, "no read overlapped the writes");
        Assert.Equal(a, File.ReadAllBytes(path));
        Assert.Equal(["swap.bin"], Entries(dir.Path));
    }

    [Fact]
    public void Null_or_empty_arguments_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => AtomicFile.Write("", _ => { }));
        Assert.Throws<ArgumentNullException>(() => AtomicFile.Write("x.bin", null!));
    }
}
