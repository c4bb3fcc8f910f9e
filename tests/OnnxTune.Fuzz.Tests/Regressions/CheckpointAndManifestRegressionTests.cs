using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Fuzz.Tests.Fuzzing;
using OnnxTune.Training;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.SafeTensors;

namespace OnnxTune.Fuzz.Tests.Regressions;

public sealed class CheckpointAndManifestRegressionTests
{
    private static TempFolder SavedCheckpoint(out JsonObject json)
    {
        var dir = new TempFolder();
        CheckpointStore.Save(dir.Path, new CheckpointMetadata
        {
            Step = 3,
            LearningRate = 0.01,
            Parameters = [new CheckpointTensor("w", "float", [2])],
            OptimizerStates = [new CheckpointTensor("w.exp_avg", "float", [2])],
        }, [SafeTensor.FromFloats("w", [1f, 2f], 2), SafeTensor.FromFloats("w.exp_avg", [0f, 0f], 2)]);
        json = JsonNode.Parse(File.ReadAllText(dir.Combine(CheckpointStore.MetadataFileName)))!.AsObject();
        return dir;
    }

    [Theory]
    [InlineData("parameters", "null", "'parameters'")]
    [InlineData("optimizer_states", "null", "'optimizer_states'")]
    [InlineData("parameters", "[null]", "parameters[0]")]
    [InlineData("parameters", "[{\"element_type\":\"float\",\"shape\":[2]}]", "parameters[0].name")]
    [InlineData("parameters", "[{\"name\":\"w\",\"element_type\":\"float\"}]", "no shape")]
    [InlineData("parameters", "[{\"name\":\"w\",\"shape\":[2]}]", "no element_type")]
    [InlineData("parameters", "[{\"name\":\"w\",\"element_type\":\"float\",\"shape\":[-2]}]", "dims must be >= 0")]
    [InlineData("optimizer", "null", "'optimizer'")]
    [InlineData("user_properties", "null", "'user_properties'")]
    [InlineData("user_properties", "{\"a\":null}", "'user_properties.a'")]
    [InlineData("schedule", "{\"base_learning_rate\":1}", "'schedule.kind'")]
    [InlineData("schedule", "{\"kind\":\"cosine\",\"base_learning_rate\":1,\"total_steps\":-1}", "'schedule.total_steps'")]
    [InlineData("step", "-1", "'step'")]
    public void Null_or_invalid_checkpoint_fields_are_a_format_error_naming_the_field(string field, string value, string expected)
    {
        using var dir = SavedCheckpoint(out var json);
        json[field] = JsonNode.Parse(value);
        File.WriteAllText(dir.Combine(CheckpointStore.MetadataFileName), json.ToJsonString());
        var e = Assert.Throws<CheckpointFormatException>(() => CheckpointStore.Load(dir.Path));
        Assert.Contains(CheckpointStore.MetadataFileName, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("\"\"")]
    [InlineData("null")]
    [InlineData("\"abc\"")]
    public void A_missing_or_empty_tensor_hash_is_an_error_not_a_skipped_check(string hash)
    {
        using var dir = SavedCheckpoint(out var json);
        if (hash == "null") json.Remove("tensors_sha256"); else json["tensors_sha256"] = JsonNode.Parse(hash);
        File.WriteAllText(dir.Combine(CheckpointStore.MetadataFileName), json.ToJsonString());
        // Different tensors than the JSON describes: without the hash this loaded silently.
        new SafeTensorsFile([SafeTensor.FromFloats("w", [9f, 9f], 2), SafeTensor.FromFloats("w.exp_avg", [9f, 9f], 2)])
            .Write(dir.Combine(CheckpointStore.TensorsFileName));
        Assert.Contains("tensors_sha256", Assert.Throws<CheckpointFormatException>(() => CheckpointStore.Load(dir.Path)).Message);
    }

    [Fact]
    public void Valid_checkpoint_still_loads()
    {
        using var dir = SavedCheckpoint(out _);
        var (meta, tensors) = CheckpointStore.Load(dir.Path);
        Assert.Equal(3, meta.Step);
        Assert.Equal(2, tensors.Tensors.Count);
    }

    private static string ManifestJson() => JsonSerializer.Serialize(Seeds.Manifest(), ArtifactManifest.JsonOptions);

    [Theory]
    [InlineData("inputs", "null", "'inputs'")]
    [InlineData("trainable_parameters", "[null]", "trainable_parameters[0]")]
    [InlineData("inputs", "[{\"element_type\":\"float\",\"shape\":[\"3\"]}]", "inputs[0].name")]
    [InlineData("inputs", "[{\"name\":\"x\",\"element_type\":\"float\"}]", "no shape")]
    [InlineData("inputs", "[{\"name\":\"x\",\"element_type\":\"float\",\"shape\":[\"batch\",\"-3\"]}]", "dims must be >= 0")]
    [InlineData("inputs", "[{\"name\":\"x\",\"element_type\":\"float\",\"shape\":[null]}]", "dim 0 is null")]
    [InlineData("files", "null", "'files'")]
    [InlineData("files", "{\"training_model\":null}", "'files.training_model'")]
    [InlineData("loss", "null", "'loss'")]
    [InlineData("optimizer", "null", "'optimizer'")]
    [InlineData("properties", "null", "'properties'")]
    [InlineData("properties", "{\"a\":null}", "'properties.a'")]
    [InlineData("inputs", "[{\"name\":\"x\",\"element_type\":\"float\",\"shape\":[3]}]", "not valid manifest JSON")]
    [InlineData("opset", "\"17\"", "not valid manifest JSON")]
    public void Null_missing_or_wrongly_typed_manifest_fields_are_an_error_naming_the_field(string field, string value, string expected)
    {
        using var dir = new TempFolder();
        var json = JsonNode.Parse(ManifestJson())!.AsObject();
        json[field] = JsonNode.Parse(value);
        dir.Write(ArtifactFiles.ManifestFileName, json.ToJsonString());
        var e = Assert.Throws<ArtifactManifestException>(() => ArtifactManifest.Load(dir.Path));
        Assert.Contains(ArtifactFiles.ManifestFileName, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Valid_manifest_still_loads_and_json_null_is_an_error()
    {
        using var dir = new TempFolder();
        dir.Write(ArtifactFiles.ManifestFileName, ManifestJson());
        Assert.Equal(2, ArtifactManifest.Load(dir.Path).Inputs.Count);
        dir.Write(ArtifactFiles.ManifestFileName, "null");
        Assert.Throws<ArtifactManifestException>(() => ArtifactManifest.Load(dir.Path));
    }

    [Fact]
    public void Manifest_exception_is_still_an_OnnxTuneException() =>
        Assert.IsAssignableFrom<OnnxTuneException>(new ArtifactManifestException("x"));
}
