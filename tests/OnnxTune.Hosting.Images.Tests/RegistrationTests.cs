using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace OnnxTune.Hosting.Images.Tests;

/// <summary>AddImageClassification: keyed and default services, configuration binding and validation at start naming the key.</summary>
public sealed class RegistrationTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private IHost Build(string name, global::Onnx.ModelProto? model = null, Action<ImagePreprocessingOptions>? configure = null, Dictionary<string, string?>? config = null)
    {
        var artifacts = _dir.Sub("artifacts-" + Guid.NewGuid().ToString("N"));
        DigitCnn.WriteArtifacts(artifacts, model);
        var builder = Host.CreateEmptyApplicationBuilder(new());
        if (config is not null) builder.Configuration.AddInMemoryCollection(config);
        builder.Services.AddOnDeviceFineTuning(name, o =>
        {
            o.ArtifactsPath = artifacts;
            o.ModelStorePath = _dir.Sub("store-" + Guid.NewGuid().ToString("N"));
            o.MinNewFeedback = 1_000_000;
        }).AddImageClassification(configure);
        return builder.Build();
    }

    private async Task<string> StartFailsAsync(IHost host)
    {
        using (host)
        {
            var e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
            return string.Join(" | ", e.Failures);
        }
    }

    [Fact]
    public async Task Default_model_gets_keyed_and_unkeyed_services_and_configuration_binds()
    {
        using var host = Build("", config: new() { ["ImageClassification:Mean:0"] = "0.5", ["ImageClassification:Std:0"] = "0.25", ["ImageClassification:Interpolation"] = "Nearest" });
        await host.StartAsync();
        var preprocessor = host.Services.GetRequiredService<ImagePreprocessor>();
        Assert.Same(preprocessor, host.Services.GetRequiredKeyedService<ImagePreprocessor>(""));
        Assert.Same(host.Services.GetRequiredService<IImageClassifier>(), host.Services.GetRequiredKeyedService<IImageClassifier>(""));
        Assert.NotNull(host.Services.GetRequiredService<IImageFeedbackWriter>());
        var white = preprocessor.Preprocess(Digits.Png(Enumerable.Repeat((byte)16, 64).ToArray()));
        Assert.All(white.FloatData!, v => Assert.Equal(2f, v));   // (1 - 0.5) / 0.25
        await host.StopAsync();
    }

    [Fact]
    public async Task A_mean_per_channel_for_a_grayscale_model_fails_start_naming_the_key()
    {
        var failures = await StartFailsAsync(Build("digits", configure: o => { o.Mean.Add(0.485f); o.Mean.Add(0.456f); o.Mean.Add(0.406f); }));
        Assert.Contains("ImageClassification:digits:Mean has 3 values, but the model's image input has 1 channel(s)", failures, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_model_with_four_channels_fails_start_naming_the_input()
    {
        var failures = await StartFailsAsync(Build("rgba", DigitCnn.Model(channels: 4)));
        Assert.Contains("input 'image' [batch,4,8,8] has 4 channels at axis 1", failures, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Symbolic_size_needs_width_and_height_and_a_fixed_size_must_match()
    {
        var failures = await StartFailsAsync(Build("any-size", DigitCnn.Model(height: "h", width: "w")));
        Assert.Contains("symbolic dim 'h' at axis 2; set ImageClassification:any-size:Height", failures, StringComparison.Ordinal);

        using (var ok = Build("sized", DigitCnn.Model(height: "h", width: "w"), o => { o.Width = 8; o.Height = 8; }))
        {
            await ok.StartAsync();
            Assert.Equal(new ImageInputShape("image", ImageLayout.Nchw, 1, 8, 8), ok.Services.GetRequiredKeyedService<IImageClassifier>("sized").Shape);
            await ok.StopAsync();
        }

        failures = await StartFailsAsync(Build("fixed", configure: o => o.Width = 16));
        Assert.Contains("ImageClassification:fixed:Width is 16, but input 'image'", failures, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bad_values_and_unknown_keys_fail_start()
    {
        var failures = await StartFailsAsync(Build("digits", configure: o => { o.MaxPixels = 0; o.Scale = -1; o.InputName = "pixels"; }));
        Assert.Contains("ImageClassification:digits:MaxPixels 0 must be at least 1", failures, StringComparison.Ordinal);
        Assert.Contains("ImageClassification:digits:Scale -1 must be a positive finite number", failures, StringComparison.Ordinal);

        failures = await StartFailsAsync(Build("named", configure: o => o.InputName = "pixels"));
        Assert.Contains("ImageClassification:named:InputName 'pixels'", failures, StringComparison.Ordinal);

        using var unknown = Build("digits", config: new() { ["ImageClassification:digits:Meen:0"] = "0.5" });
        var e = await Assert.ThrowsAnyAsync<InvalidOperationException>(() => unknown.StartAsync());
        Assert.Contains("Meen", e.Message, StringComparison.Ordinal);
    }
}
