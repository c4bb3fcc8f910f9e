using System.Text.Json;

namespace OnnxTune.Hosting.Tests;

public sealed class ModelVersionStoreTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static GateDecision Decision(long round) => new()
    {
        ModelName = "m",
        Round = round,
        Promoted = true,
        DecidedAt = DateTimeOffset.UnixEpoch,
        Serving = new EvaluationResult(0.5, 10, null, 0, true),
        Candidate = new EvaluationResult(0.75, 10, null, 0, true),
        Checks = [GateCheckResult.Pass("held-out", "0.75 vs 0.5")],
    };

    private string Candidate(int i)
    {
        var dir = Directory.CreateDirectory(_dir.Sub($"cand{i}")).FullName;
        var (w, b) = TestModels.Params(i, [i, i, i]);
        TestModels.WriteLinear(Path.Combine(dir, "model.onnx"), w, b);
        Directory.CreateDirectory(Path.Combine(dir, "ckpt", "nested"));
        File.WriteAllText(Path.Combine(dir, "ckpt", "checkpoint.json"), $"{{\"step\":{i}}}");
        File.WriteAllText(Path.Combine(dir, "ckpt", "nested", "t.bin"), "x");
        return dir;
    }

    [Fact]
    public void Versions_are_complete_folders_and_only_the_last_N_plus_current_are_kept()
    {
        using var store = new ModelVersionStore(_dir.Sub("versions"), keepVersions: 3);
        Assert.Null(store.GetCurrent());
        for (var i = 1; i <= 5; i++)
        {
            var c = Candidate(i);
            var info = store.AddVersion(Path.Combine(c, "model.onnx"), Path.Combine(c, "ckpt"), new { round = i }, Decision(i));
            Assert.Equal(i, info.Version);
            store.SetCurrent(info.Version);
            store.Prune();
        }
        Assert.Equal([3, 4, 5], store.ListVersions().Select(v => v.Version));
        var current = store.GetCurrent()!;
        Assert.Equal(5, current.Version);
        Assert.True(File.Exists(current.ModelPath));
        Assert.Equal("{\"step\":5}", File.ReadAllText(Path.Combine(current.CheckpointPath, "checkpoint.json")));
        Assert.True(File.Exists(Path.Combine(current.CheckpointPath, "nested", "t.bin")));
        using var decision = JsonDocument.Parse(File.ReadAllText(current.DecisionPath));
        Assert.True(decision.RootElement.GetProperty("promoted").GetBoolean());
        Assert.Equal(0.75, decision.RootElement.GetProperty("candidate").GetProperty("held_out_metric").GetDouble());
        Assert.Equal(5, JsonDocument.Parse(File.ReadAllText(current.MetricsPath)).RootElement.GetProperty("round").GetInt32());
        Assert.Empty(Directory.EnumerateDirectories(store.Root, ".tmp-*"));
    }

    [Fact]
    public async Task Rollback_moves_the_pointer_and_the_rolled_back_version_survives_pruning()
    {
        var root = _dir.Sub("versions");
        using (var store = new ModelVersionStore(root, keepVersions: 2))
        {
            for (var i = 1; i <= 3; i++)
            {
                var c = Candidate(i);
                store.SetCurrent(store.AddVersion(Path.Combine(c, "model.onnx"), null, new { }, Decision(i)).Version);
                store.Prune();
            }
            Assert.Equal([2, 3], store.ListVersions().Select(v => v.Version));
            await Assert.ThrowsAsync<ModelVersionNotFoundException>(() => store.RollbackAsync(1));
            Assert.Equal(2, (await store.RollbackAsync(2)).Version);
            Assert.Equal(2, store.GetCurrent()!.Version);

            var c4 = Candidate(4);
            store.AddVersion(Path.Combine(c4, "model.onnx"), null, new { }, Decision(4));
            store.Prune();
            // The newest two (3, 4) are kept, and 2 because it is current.
            Assert.Equal([2, 3, 4], store.ListVersions().Select(v => v.Version));
            var c5 = Candidate(5);
            store.AddVersion(Path.Combine(c5, "model.onnx"), null, new { }, Decision(5));
            store.Prune();
            Assert.Equal([2, 4, 5], store.ListVersions().Select(v => v.Version));
        }
        using var reopened = new ModelVersionStore(root, keepVersions: 2);
        Assert.Equal(2, reopened.GetCurrent()!.Version);
    }

    [Fact]
    public void Leftover_temp_folders_from_an_interrupted_write_are_ignored_and_cleaned()
    {
        var root = Directory.CreateDirectory(_dir.Sub("versions")).FullName;
        var leftover = Directory.CreateDirectory(Path.Combine(root, ".tmp-v000001-deadbeef")).FullName;
        File.WriteAllText(Path.Combine(leftover, "model.onnx"), "half");
        // A version folder without its model (not renamed by us, but possible by hand) is not listed either.
        Directory.CreateDirectory(Path.Combine(root, "v000007"));
        using var store = new ModelVersionStore(root, keepVersions: 2);
        Assert.False(Directory.Exists(leftover));
        Assert.Empty(store.ListVersions());
        Assert.Null(store.GetCurrent());
        var c = Candidate(1);
        Assert.Equal(8, store.AddVersion(Path.Combine(c, "model.onnx"), null, new { }, Decision(1)).Version);
    }

    [Fact]
    public void A_pointer_to_a_missing_version_reads_as_none()
    {
        var root = Directory.CreateDirectory(_dir.Sub("versions")).FullName;
        File.WriteAllText(Path.Combine(root, ModelVersionStore.CurrentFileName), "9");
        using var store = new ModelVersionStore(root, keepVersions: 2);
        Assert.Null(store.GetCurrent());
    }
}
