using OnnxTune.Training.Sessions;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests;

public sealed class HotSwapTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static SwappableInferenceSession.Entry Load(string path, int version) =>
        new(new InferenceSession(path), new ModelVersionInfo(version, Path.GetDirectoryName(path)!), path);

    [Fact]
    public async Task Eight_threads_predict_across_25_swaps_without_failures_and_every_result_is_one_versions_output()
    {
        const int versions = 26;
        var x = new float[] { 0.5f, -1f, 2f, 0.25f };
        var expected = new float[versions][];
        var paths = new string[versions];
        for (var v = 0; v < versions; v++)
        {
            var (w, b) = TestModels.Params(1f + v, [v * 100f, v * 100f + 1, v * 100f + 2]);
            paths[v] = _dir.Sub($"m{v}.onnx");
            TestModels.WriteLinear(paths[v], w, b);
            expected[v] = TestModels.Expected(x, w, b);
        }
        using var sessions = new SwappableInferenceSession();
        sessions.Publish(Load(paths[0], 0));
        var handle = new ModelHandle("m", sessions, () => { }, TimeProvider.System);

        var retired = new List<SwappableInferenceSession.Entry>();
        using var stop = new CancellationTokenSource();
        var counts = new int[8];
        var seenVersions = new System.Collections.Concurrent.ConcurrentDictionary<int, byte>();
        var workers = Enumerable.Range(0, 8).Select(t => Task.Factory.StartNew(() =>
        {
            var input = TestModels.Input(TensorData.Float(x, 1, 4));
            while (!stop.IsCancellationRequested)
            {
                var output = handle.Predict(input);
                var v = output.Version!.Value;
                Assert.Equal(expected[v], output.Outputs["y"].FloatData!);
                seenVersions[v] = 0;
                counts[t]++;
            }
        }, TaskCreationOptions.LongRunning)).ToArray();

        for (var v = 1; v < versions; v++)
        {
            await Task.Delay(15);
            var previous = sessions.Publish(Load(paths[v], v));
            retired.Add(previous!);
        }
        await Task.Delay(30);
        stop.Cancel();
        await Task.WhenAll(workers);

        Assert.All(counts, c => Assert.True(c > 0));
        Assert.True(seenVersions.Count >= 3, $"only versions {string.Join(",", seenVersions.Keys)} were observed");
        Assert.Equal(versions - 1, handle.ServingVersion);
        // Every retired session is disposed once its last lease is gone.
        await Task.WhenAll(retired.Select(e => e.Disposed)).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.All(retired, e => Assert.Equal(0, e.References));
    }

    [Fact]
    public async Task A_held_lease_keeps_the_old_session_alive_until_released()
    {
        var (w0, b0) = TestModels.Params(1f, [0f, 0f, 0f]);
        var (w1, b1) = TestModels.Params(2f, [5f, 5f, 5f]);
        TestModels.WriteLinear(_dir.Sub("a.onnx"), w0, b0);
        TestModels.WriteLinear(_dir.Sub("b.onnx"), w1, b1);
        using var sessions = new SwappableInferenceSession();
        var first = Load(_dir.Sub("a.onnx"), 1);
        sessions.Publish(first);

        var lease = sessions.Acquire();
        sessions.Publish(Load(_dir.Sub("b.onnx"), 2));
        Assert.Equal(2, sessions.Current!.Version!.Version);
        Assert.False(first.Disposed.IsCompleted);
        // The old session still runs while leased.
        using (var x = OrtValue.CreateTensorValueFromMemory(new float[] { 1, 1, 1, 1 }, [1, 4]))
        using (var ro = new RunOptions())
        using (var outs = lease.Session.Run(ro, ["x"], [x], ["y"]))
            Assert.Equal(TestModels.Expected([1, 1, 1, 1], w0, b0), outs[0].GetTensorDataAsSpan<float>().ToArray());
        lease.Dispose();
        await first.Disposed.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, first.References);
        using (var l2 = sessions.Acquire()) Assert.Equal(2, l2.Entry.Version!.Version);
    }

    [Fact]
    public void Acquire_without_a_session_throws_a_typed_error()
    {
        using var sessions = new SwappableInferenceSession();
        Assert.Throws<ModelNotServingException>(() => sessions.Acquire());
    }

    [Fact]
    public void Asking_for_CUDA_on_the_CPU_runtime_gives_a_typed_error_or_falls_back_when_allowed()
    {
        var e = Assert.Throws<ExecutionProviderUnavailableException>(() =>
            InferenceSessionFactory.CreateSessionOptions(ExecutionProvider.Cuda, 0, 1, fallbackToCpu: false, "intent", NullLogger.Instance));
        Assert.Equal(ExecutionProvider.Cuda, e.Provider);
        Assert.Contains("CUDA", e.Message, StringComparison.Ordinal);
        Assert.Contains("'intent'", e.Message, StringComparison.Ordinal);

        var (w, b) = TestModels.Params(1f, [1f, 2f, 3f]);
        TestModels.WriteLinear(_dir.Sub("cpu.onnx"), w, b);
        var options = new OnDeviceFineTuningOptions { ExecutionProvider = ExecutionProvider.Cuda, FallbackToCpu = true };
        using var session = new InferenceSessionFactory("intent", options, NullLogger.Instance).Create(_dir.Sub("cpu.onnx"));
        Assert.Contains("x", session.InputNames);
    }
}
