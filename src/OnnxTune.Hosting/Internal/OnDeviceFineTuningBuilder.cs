namespace Microsoft.Extensions.DependencyInjection;

internal sealed record OnDeviceFineTuningBuilder(string Name, IServiceCollection Services) : IOnDeviceFineTuningBuilder;
