using System.Diagnostics.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using OnnxTune.Hosting.Internal;

namespace OnnxTune.Hosting.Tests;

public sealed class RegistrationAndOptionsTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private sealed class AlwaysPass : IValidationGate
    {
        public string Name => "always";
        public ValueTask<GateCheckResult> EvaluateAsync(GateContext context, CancellationToken cancellationToken) =>
            ValueTask.FromResult(GateCheckResult.Pass(Name, "ok"));
    }

    private HostApplicationBuilder Builder(Dictionary<string, string?> config)
    {
        var b = Host.CreateEmptyApplicationBuilder(new());
        b.Configuration.AddInMemoryCollection(config);
        return b;
    }

    [Fact]
    public async Task Two_named_models_bind_from_configuration_and_get_keyed_services()
    {
        TestModels.WriteArtifacts(_dir.Sub("intent-art"), favouredClass: 1);
        TestModels.WriteArtifacts(_dir.Sub("sentiment-art"), favouredClass: 2);
        var b = Builder(new()
        {
            ["OnDeviceFineTuning:intent:ArtifactsPath"] = _dir.Sub("intent-art"),
            ["OnDeviceFineTuning:intent:ModelStorePath"] = _dir.Sub("intent-store"),
            ["OnDeviceFineTuning:intent:BatchSize"] = "8",
            ["OnDeviceFineTuning:intent:Labels:0"] = "weather",
            ["OnDeviceFineTuning:intent:Labels:1"] = "music",
            ["OnDeviceFineTuning:intent:Labels:2"] = "alarm",
            ["OnDeviceFineTuning:sentiment:ArtifactsPath"] = _dir.Sub("sentiment-art"),
            ["OnDeviceFineTuning:sentiment:ModelStorePath"] = _dir.Sub("sentiment-store"),
        });
        b.Services.AddOnDeviceFineTuning("intent").BindConfiguration().AddValidationGate<AlwaysPass>();
        b.Services.AddOnDeviceFineTuning("sentiment").BindConfiguration();
        b.Services.AddOnDeviceFineTuning("intent"); // a second call adds nothing
        using var host = b.Build();
        await host.StartAsync();
        try
        {
            Assert.Equal(2, host.Services.GetServices<IHostedService>().OfType<FineTuningBackgroundService>().Count());
            Assert.Equal(8, host.Services.GetRequiredService<IOptionsMonitor<OnDeviceFineTuningOptions>>().Get("intent").BatchSize);
            var intent = host.Services.GetRequiredKeyedService<IModelHandle>("intent");
            var sentiment = host.Services.GetRequiredKeyedService<IModelHandle>("sentiment");
            Assert.Equal("intent", intent.ModelName);
            var input = TestModels.Input(TensorData.Float([0.1f, 0.2f, 0.3f, 0.4f], 1, 4));
            static int ArgMax(float[] y) => Array.IndexOf(y, y.Max());
            Assert.Equal(1, ArgMax(intent.Predict(input).Outputs["y"].FloatData!));
            Assert.Equal(2, ArgMax(sentiment.Predict(input).Outputs["y"].FloatData!));
            Assert.Single(host.Services.GetKeyedServices<IValidationGate>("intent"));
            Assert.Null(host.Services.GetService<IModelHandle>()); // no default model registered

            var writer = host.Services.GetRequiredKeyedService<IFeedbackWriter>("intent");
            var receipt = await writer.WriteAsync(Feedback.ForTensors(input, "alarm", "u1"));
            var stored = await host.Services.GetRequiredKeyedService<IFeedbackStore>("intent").GetTrainingSinceAsync(0, 10);
            var held = await host.Services.GetRequiredKeyedService<IFeedbackStore>("intent").GetHeldOutAsync(10);
            var record = Assert.Single(stored.Concat(held));
            Assert.Equal(receipt.Id, record.Id);
            Assert.Equal(2, record.LabelIndex);
            Assert.Equal(0, await host.Services.GetRequiredKeyedService<IFeedbackStore>("sentiment").GetLatestSequenceAsync());
            Assert.True(File.Exists(Path.Combine(_dir.Sub("intent-store"), "feedback.db")));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task Default_model_registers_unkeyed_services_and_a_healthy_check()
    {
        TestModels.WriteArtifacts(_dir.Sub("art"));
        var b = Builder(new());
        b.Services.AddOnDeviceFineTuning(o => { o.ArtifactsPath = _dir.Sub("art"); o.ModelStorePath = _dir.Sub("store"); });
        using var host = b.Build();
        await host.StartAsync();
        Assert.Single(host.Services.GetServices<IHostedService>().OfType<FineTuningBackgroundService>());
        Assert.Null(host.Services.GetRequiredService<IModelHandle>().ServingVersion);
        Assert.NotNull(host.Services.GetRequiredService<IFeedbackWriter>());
        Assert.NotNull(host.Services.GetRequiredService<ModelVersionStore>());
        var report = await host.Services.GetRequiredService<Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckService>().CheckHealthAsync();
        Assert.Equal(Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Healthy, report.Status);
        Assert.Equal("base", report.Entries["onnxtune"].Data["serving_version"]);
        await host.StopAsync();
    }

    private async Task<string> StartFailureAsync(Dictionary<string, string?> config, string name = "intent")
    {
        var b = Builder(config);
        b.Services.AddOnDeviceFineTuning(name).BindConfiguration();
        using var host = b.Build();
        var e = await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync());
        return e.Message;
    }

    [Fact]
    public async Task Invalid_values_fail_start_with_messages_naming_the_key()
    {
        TestModels.WriteArtifacts(_dir.Sub("art"));
        var msg = await StartFailureAsync(new()
        {
            ["OnDeviceFineTuning:intent:ArtifactsPath"] = _dir.Sub("art"),
            ["OnDeviceFineTuning:intent:ModelStorePath"] = _dir.Sub("store"),
            ["OnDeviceFineTuning:intent:BatchSize"] = "0",
            ["OnDeviceFineTuning:intent:HeldOutShare"] = "0.95",
            ["OnDeviceFineTuning:intent:OnlyWhenIdle"] = "true",
            ["OnDeviceFineTuning:intent:IdleWindow"] = "02:00:00",
        });
        Assert.Contains("OnDeviceFineTuning:intent:BatchSize", msg, StringComparison.Ordinal);
        Assert.Contains("OnDeviceFineTuning:intent:HeldOutShare", msg, StringComparison.Ordinal);
        Assert.Contains("OnDeviceFineTuning:intent:IdleWindow", msg, StringComparison.Ordinal);
        Assert.DoesNotContain("OnDeviceFineTuning:intent:ArtifactsPath", msg, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_missing_or_unreadable_artifacts_folder_fails_start_clearly()
    {
        var missing = await StartFailureAsync(new()
        {
            ["OnDeviceFineTuning:intent:ArtifactsPath"] = _dir.Sub("nope"),
            ["OnDeviceFineTuning:intent:ModelStorePath"] = _dir.Sub("store"),
        });
        Assert.Contains("OnDeviceFineTuning:intent:ArtifactsPath", missing, StringComparison.Ordinal);
        Assert.Contains("does not exist", missing, StringComparison.Ordinal);

        Directory.CreateDirectory(_dir.Sub("empty"));
        var noManifest = await StartFailureAsync(new()
        {
            ["OnDeviceFineTuning:intent:ArtifactsPath"] = _dir.Sub("empty"),
            ["OnDeviceFineTuning:intent:ModelStorePath"] = _dir.Sub("store"),
        });
        Assert.Contains("OnDeviceFineTuning:intent:ArtifactsPath", noManifest, StringComparison.Ordinal);
        Assert.Contains("manifest.json is missing", noManifest, StringComparison.Ordinal);

        Directory.CreateDirectory(_dir.Sub("bad"));
        File.WriteAllText(Path.Combine(_dir.Sub("bad"), "manifest.json"), "{ not json");
        var bad = await StartFailureAsync(new()
        {
            ["OnDeviceFineTuning:intent:ArtifactsPath"] = _dir.Sub("bad"),
            ["OnDeviceFineTuning:intent:ModelStorePath"] = _dir.Sub("store"),
        });
        Assert.Contains("not valid manifest JSON", bad, StringComparison.Ordinal);

        var required = await StartFailureAsync(new() { ["OnDeviceFineTuning:intent:BatchSize"] = "4" });
        Assert.Contains("OnDeviceFineTuning:intent:ArtifactsPath", required, StringComparison.Ordinal);
        Assert.Contains("OnDeviceFineTuning:intent:ModelStorePath", required, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_misspelt_key_fails_start()
    {
        TestModels.WriteArtifacts(_dir.Sub("art"));
        var msg = await StartFailureAsync(new()
        {
            ["OnDeviceFineTuning:intent:ArtifactsPath"] = _dir.Sub("art"),
            ["OnDeviceFineTuning:intent:ModelStorePath"] = _dir.Sub("store"),
            ["OnDeviceFineTuning:intent:BatchSzie"] = "4",
        });
        Assert.Contains("BatchSzie", msg, StringComparison.Ordinal);
    }

    [Fact]
    public void Model_names_with_a_colon_are_refused()
    {
        var services = new ServiceCollection();
        Assert.Throws<ArgumentException>(() => services.AddOnDeviceFineTuning("a:b"));
    }

    [Fact]
    public async Task Meter_reports_feedback_and_serving_version()
    {
        TestModels.WriteArtifacts(_dir.Sub("art"));
        var b = Builder(new());
        b.Services.AddOnDeviceFineTuning("m", o => { o.ArtifactsPath = _dir.Sub("art"); o.ModelStorePath = _dir.Sub("store"); });
        using var host = b.Build();
        var accepted = 0L;
        var rejected = 0L;
        long? serving = null;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (inst, l) =>
        {
            if (inst.Meter.Name == "OnnxTune" && inst.Meter.Scope == host.Services.GetService<IMeterFactory>()) l.EnableMeasurementEvents(inst);
        };
        listener.SetMeasurementEventCallback<long>((inst, v, tags, _) =>
        {
            if (inst.Name == "onnxtune.feedback.accepted") Interlocked.Add(ref accepted, v);
            if (inst.Name == "onnxtune.feedback.rejected") Interlocked.Add(ref rejected, v);
            if (inst.Name == "onnxtune.serving.version") serving = v;
        });
        listener.Start();
        await host.StartAsync();
        var writer = host.Services.GetRequiredKeyedService<IFeedbackWriter>("m");
        await writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TensorData.Float([1, 2, 3, 4], 1, 4)), 1));
        await Assert.ThrowsAsync<FeedbackValidationException>(() => writer.WriteAsync(Feedback.ForTensors(TestModels.Input(TensorData.Float([1, 2, 3, 4], 1, 4)), 7)).AsTask());
        listener.RecordObservableInstruments();
        Assert.Equal(1, accepted);
        Assert.Equal(1, rejected);
        Assert.Equal(0, serving);
        await host.StopAsync();
    }
}
