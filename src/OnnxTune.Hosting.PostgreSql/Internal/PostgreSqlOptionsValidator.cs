using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using Npgsql;

namespace OnnxTune.Hosting.PostgreSql.Internal;

/// <summary>Validates <see cref="PostgreSqlFineTuningOptions"/> at start; every message names the configuration key.</summary>
internal sealed partial class PostgreSqlOptionsValidator : IValidateOptions<PostgreSqlFineTuningOptions>
{
    public ValidateOptionsResult Validate(string? name, PostgreSqlFineTuningOptions o)
    {
        var errors = new List<string>();
        var p = o.ConfigurationPath;
        if (string.IsNullOrWhiteSpace(o.ConnectionString))
            errors.Add($"{p}:ConnectionString is required (an Npgsql connection string, for example \"Host=db;Database=app;Username=app;Password=...\").");
        else
        {
            try { _ = new NpgsqlConnectionStringBuilder(o.ConnectionString); }
            catch (ArgumentException e) { errors.Add($"{p}:ConnectionString is not a valid Npgsql connection string: {e.Message}"); }
        }
        var schema = SchemaName(name ?? "", o);
        if (!Identifier().IsMatch(schema))
            errors.Add($"{p}:Schema '{schema}' is not a plain PostgreSQL identifier (lower-case letters, digits and '_', starting with a letter or '_', at most 63 characters).");
        if (o.LeaseDuration < TimeSpan.FromSeconds(1) || o.LeaseDuration > TimeSpan.FromHours(1))
            errors.Add($"{p}:LeaseDuration {o.LeaseDuration} must be between 1 second and 1 hour.");
        if (o.PollInterval < TimeSpan.FromMilliseconds(100) || o.PollInterval > TimeSpan.FromMinutes(10))
            errors.Add($"{p}:PollInterval {o.PollInterval} must be between 100 ms and 10 minutes.");
        if (!Enum.IsDefined(o.VersionFiles))
            errors.Add($"{p}:VersionFiles '{o.VersionFiles}' is not one of {string.Join(", ", Enum.GetNames<VersionFileStorage>())}.");
        if (o.VersionFiles == VersionFileStorage.SharedFolder && string.IsNullOrWhiteSpace(o.SharedFolderPath))
            errors.Add($"{p}:SharedFolderPath is required when {p}:VersionFiles is SharedFolder.");
        if (o.MaxBlobBytes < 1 || o.MaxBlobBytes > 1L << 30)
            errors.Add($"{p}:MaxBlobBytes {o.MaxBlobBytes} must be between 1 and 1073741824 (1 GiB, the bytea limit).");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>The schema of a model: the option, else <c>onnxtune</c> / <c>onnxtune_&lt;name&gt;</c> (lower-cased, other characters as '_').</summary>
    public static string SchemaName(string model, PostgreSqlFineTuningOptions o) =>
        o.Schema is { Length: > 0 } s ? s
        : model.Length == 0 ? "onnxtune"
        : "onnxtune_" + NotIdentifierChar().Replace(model.ToLowerInvariant(), "_");

    [GeneratedRegex("^[a-z_][a-z0-9_]{0,62}$")]
    private static partial Regex Identifier();

    [GeneratedRegex("[^a-z0-9_]")]
    private static partial Regex NotIdentifierChar();
}
