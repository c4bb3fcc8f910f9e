using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Rejects two registered models that share a store folder or a feedback database (they would move each other's
/// watermark, prune each other's versions and collide on round folders). The other models' options are built from
/// their configure actions without validating them, so validation never recurses.
/// </summary>
internal sealed class SharedStoreOptionsValidator(
    OnDeviceFineTuningRegistry registry,
    IEnumerable<IConfigureOptions<OnDeviceFineTuningOptions>> setups,
    IEnumerable<IPostConfigureOptions<OnDeviceFineTuningOptions>> postSetups) : IValidateOptions<OnDeviceFineTuningOptions>
{
    public ValidateOptionsResult Validate(string? name, OnDeviceFineTuningOptions options)
    {
        name ??= Options.DefaultName;
        if (options.ModelStorePath.Length == 0) return ValidateOptionsResult.Skip;
        var prefix = options.ConfigurationPath ?? OnDeviceFineTuningOptionsValidator.KeyPrefix(name, OnDeviceFineTuningOptions.DefaultSectionName);
        var store = Normalize(options.ModelStorePath);
        var db = Normalize(options.FeedbackDatabasePath ?? Path.Combine(options.ModelStorePath, "feedback.db"));
        var errors = new List<string>();
        foreach (var other in registry.Names)
        {
            if (other == name) continue;
            var o = Build(other);
            if (o.ModelStorePath.Length == 0) continue;
            var otherStore = Normalize(o.ModelStorePath);
            var otherDb = Normalize(o.FeedbackDatabasePath ?? Path.Combine(o.ModelStorePath, "feedback.db"));
            var shown = other.Length == 0 ? "the default model" : $"model '{other}'";
            if (string.Equals(store, otherStore, StringComparison.Ordinal))
                errors.Add($"{prefix}:ModelStorePath '{options.ModelStorePath}' is also the store folder of {shown}; every model needs its own.");
            if (string.Equals(db, otherDb, StringComparison.Ordinal))
                errors.Add($"{prefix}:FeedbackDatabasePath '{db}' is also the feedback database of {shown}; every model needs its own.");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private OnDeviceFineTuningOptions Build(string name)
    {
        var o = new OnDeviceFineTuningOptions();
        foreach (var setup in setups)
        {
            if (setup is IConfigureNamedOptions<OnDeviceFineTuningOptions> named) named.Configure(name, o);
            else if (name == Options.DefaultName) setup.Configure(o);
        }
        foreach (var post in postSetups) post.PostConfigure(name, o);
        return o;
    }

    private static string Normalize(string path) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
}
