namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Configures one on-device fine-tuned model registered by <c>AddOnDeviceFineTuning</c>.</summary>
public interface IOnDeviceFineTuningBuilder
{
    /// <summary>Gets the model name (empty for the default model); services are keyed by it.</summary>
    string Name { get; }

    /// <summary>Gets the service collection.</summary>
    IServiceCollection Services { get; }
}
