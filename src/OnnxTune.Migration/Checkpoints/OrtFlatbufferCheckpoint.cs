using Google.FlatBuffers;
using OnnxTune.Migration.Checkpoints.Fbs;

namespace OnnxTune.Migration.Checkpoints;

/// <summary>Reads and writes ONNX Runtime's flatbuffer checkpoint file (identifier <c>ODTC</c>) through the code flatc
/// generated from <c>ort_training_checkpoint.fbs</c> (<c>Checkpoints/Fbs</c>).</summary>
internal static class OrtFlatbufferCheckpoint
{
    public const string FileIdentifier = "ODTC";

    /// <summary>The format version ORT 1.17–1.19 writes.</summary>
    public const int WrittenVersion = 2;

    public static bool HasIdentifier(string path)
    {
        if (!File.Exists(path)) return false;
        using var stream = File.OpenRead(path);
        Span<byte> head = stackalloc byte[8];
        return stream.Read(head) == 8 && System.Text.Encoding.ASCII.GetString(head[4..]) == FileIdentifier;
    }

    public static OrtCheckpoint Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var bb = new ByteBuffer(bytes);
        if (!Checkpoint.CheckpointBufferHasIdentifier(bb))
            throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, path, $"'{path}' is not an ONNX Runtime checkpoint: its file identifier is not '{FileIdentifier}'.");
        if (!Checkpoint.VerifyCheckpoint(bb))
            throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, path, $"'{path}' has the '{FileIdentifier}' identifier but fails flatbuffer verification against ort_training_checkpoint.fbs (truncated or corrupt).");
        var root = Checkpoint.GetRootAsCheckpoint(bb);
        var module = root.ModuleState
            ?? throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, "module_state", $"'{path}' has no module_state (no parameters).");
        if (module.IsNominalState)
            throw new OrtImportException(OrtImportErrorKind.NominalCheckpoint, "module_state.is_nominal_state",
                $"'{path}' is a nominal checkpoint (module_state.is_nominal_state): it names {module.RequiresGradParamsLength} trainable and {module.FrozenParamsLength} frozen parameters but holds no values. Import the complete checkpoint instead.");
        if (module.HasExternalData)
            throw new OrtImportException(OrtImportErrorKind.ExternalData, "module_state.has_external_data",
                $"'{path}' keeps its tensors in an external data file (module_state.has_external_data), which the importer does not read.");
        var trainable = new List<OrtTensor>();
        for (var i = 0; i < module.RequiresGradParamsLength; i++) trainable.Add(ReadTensor(module.RequiresGradParams(i)!.Value, path));
        var frozen = new List<OrtTensor>();
        for (var i = 0; i < module.FrozenParamsLength; i++) frozen.Add(ReadTensor(module.FrozenParams(i)!.Value, path));

        var groups = new List<OrtOptimizerGroup>();
        for (var g = 0; g < root.OptimizerGroupsLength; g++)
        {
            var group = root.OptimizerGroups(g)!.Value;
            var states = new Dictionary<string, IReadOnlyDictionary<string, OrtTensor>>(StringComparer.Ordinal);
            for (var s = 0; s < group.OptimizerStatesLength; s++)
            {
                var state = group.OptimizerStates(s)!.Value;
                var moments = new Dictionary<string, OrtTensor>(StringComparer.Ordinal);
                for (var m = 0; m < state.MomentumsLength; m++)
                {
                    var t = ReadTensor(state.Momentums(m)!.Value, path);
                    moments[t.Name] = t;
                }
                states[state.ParamName ?? ""] = moments;
            }
            groups.Add(new OrtOptimizerGroup(group.GroupName ?? "", group.Step, group.InitialLearningRate, states));
        }

        var properties = new Dictionary<string, object>(StringComparer.Ordinal);
        if (root.PropertyBag is { } bag)
        {
            for (var i = 0; i < bag.IntsLength; i++) { var p = bag.Ints(i)!.Value; properties[p.Name ?? ""] = p.Value; }
            for (var i = 0; i < bag.FloatsLength; i++) { var p = bag.Floats(i)!.Value; properties[p.Name ?? ""] = p.Value; }
            for (var i = 0; i < bag.StringsLength; i++) { var p = bag.Strings(i)!.Value; properties[p.Name ?? ""] = p.Value ?? ""; }
        }
        return new OrtCheckpoint
        {
            Format = OrtCheckpointFormat.Flatbuffer,
            Version = root.Version,
            Trainable = trainable,
            Frozen = frozen,
            OptimizerGroups = groups,
            Properties = properties,
        };
    }

    private static OrtTensor ReadTensor(Fbs.Tensor t, string path)
    {
        var name = t.Name ?? "";
        if (t.ExternalDataOffset != -1)
            throw new OrtImportException(OrtImportErrorKind.ExternalData, name, $"'{path}': tensor '{name}' lives in an external data file (offset {t.ExternalDataOffset}), which the importer does not read.");
        var isDouble = t.DataType switch
        {
            TensorDataType.FLOAT => false,
            TensorDataType.DOUBLE => true,
            _ => throw new OrtImportException(OrtImportErrorKind.UnsupportedTensorType, name, $"'{path}': tensor '{name}' has element type {t.DataType}; only FLOAT and DOUBLE parameters are imported."),
        };
        var dims = t.GetDimsArray() ?? [];
        var data = t.GetRawDataArray() ?? [];
        var expected = dims.Aggregate(1L, (a, b) => a * b) * (isDouble ? 8 : 4);
        if (data.Length != expected)
            throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, name, $"'{path}': tensor '{name}' has {data.Length} bytes of raw_data, but its shape [{string.Join(",", dims)}] needs {expected}.");
        return new OrtTensor(name, dims, isDouble, data);
    }

    /// <summary>Serialises <paramref name="checkpoint"/> as ORT writes it (version <see cref="WrittenVersion"/>); <paramref name="nominal"/> leaves out the values.</summary>
    public static byte[] Write(OrtCheckpoint checkpoint, bool nominal = false)
    {
        var b = new FlatBufferBuilder(1024);
        Offset<Fbs.Tensor> Tensor(OrtTensor t)
        {
            var name = b.CreateString(t.Name);
            var raw = nominal ? default : Fbs.Tensor.CreateRawDataVectorBlock(b, t.Data);
            var dims = Fbs.Tensor.CreateDimsVector(b, t.Dims);
            Fbs.Tensor.StartTensor(b);
            Fbs.Tensor.AddName(b, name);
            Fbs.Tensor.AddDims(b, dims);
            Fbs.Tensor.AddDataType(b, t.IsDouble ? TensorDataType.DOUBLE : TensorDataType.FLOAT);
            if (!nominal) Fbs.Tensor.AddRawData(b, raw);
            return Fbs.Tensor.EndTensor(b);
        }
        var req = ModuleState.CreateRequiresGradParamsVector(b, checkpoint.Trainable.OrderBy(t => t.Name, StringComparer.Ordinal).Select(Tensor).ToArray());
        var frozen = ModuleState.CreateFrozenParamsVector(b, checkpoint.Frozen.OrderBy(t => t.Name, StringComparer.Ordinal).Select(Tensor).ToArray());
        var module = ModuleState.CreateModuleState(b, req, frozen, nominal, false);
        var groups = checkpoint.OptimizerGroups.Select(g =>
        {
            var states = g.States.OrderBy(s => s.Key, StringComparer.Ordinal).Select(s =>
            {
                var moments = ParameterOptimizerState.CreateMomentumsVector(b, s.Value.OrderBy(m => m.Key, StringComparer.Ordinal).Select(m => Tensor(m.Value)).ToArray());
                return ParameterOptimizerState.CreateParameterOptimizerState(b, b.CreateString(s.Key), moments);
            }).ToArray();
            return OptimizerGroup.CreateOptimizerGroup(b, b.CreateString(g.Name), g.Step, g.InitialLearningRate, OptimizerGroup.CreateOptimizerStatesVector(b, states));
        }).ToArray();
        var groupVector = Checkpoint.CreateOptimizerGroupsVector(b, groups);
        var props = checkpoint.Properties.OrderBy(p => p.Key, StringComparer.Ordinal).ToList();
        var ints = PropertyBag.CreateIntsVector(b, props.Where(p => p.Value is long).Select(p => IntProperty.CreateIntProperty(b, b.CreateString(p.Key), (long)p.Value)).ToArray());
        var floats = PropertyBag.CreateFloatsVector(b, props.Where(p => p.Value is float).Select(p => FloatProperty.CreateFloatProperty(b, b.CreateString(p.Key), (float)p.Value)).ToArray());
        var strings = PropertyBag.CreateStringsVector(b, props.Where(p => p.Value is string).Select(p => StringProperty.CreateStringProperty(b, b.CreateString(p.Key), b.CreateString((string)p.Value))).ToArray());
        var bag = PropertyBag.CreatePropertyBag(b, ints, floats, strings);
        var root = Checkpoint.CreateCheckpoint(b, WrittenVersion, module, groupVector, bag);
        Checkpoint.FinishCheckpointBuffer(b, root);
        return b.SizedByteArray();
    }
}
