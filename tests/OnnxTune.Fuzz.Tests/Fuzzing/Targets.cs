using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using global::Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Cli.Text;
using OnnxTune.Hosting;
using OnnxTune.Hosting.Internal;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Training.Checkpoints;
using OnnxTune.Training.Data;
using OnnxTune.Training.SafeTensors;
using OnnxTune.Training.Schedules;
using DataType = global::Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Fuzz.Tests.Fuzzing;

/// <summary>Valid seed files for every parser.</summary>
internal static class Seeds
{
    public static byte[] SafeTensors()
    {
        var file = new SafeTensorsFile(
        [
            SafeTensor.FromFloats("w", [1f, 2f, 3f, 4f, 5f, 6f, 7f, 8f, 9f, 10f, 11f, 12f], 3, 4),
            SafeTensor.FromInt64s("ids", [1L, 2L, 3L, 4L, 5L], 5),
            SafeTensor.FromBools("mask", [true, false, true, true], 2, 2),
            SafeTensor.FromDoubles("scale", [0.5], []),
            SafeTensor.FromInt32s("counts", [7, 8], 2),
        ], new Dictionary<string, string> { ["format"] = "pt", ["producer"] = "fuzz" });
        return ToBytes(file);
    }

    public static byte[] ToBytes(SafeTensorsFile file)
    {
        var path = Path.Combine(Path.GetTempPath(), $"onnxtune-fuzz-{Guid.NewGuid():N}.safetensors");
        try
        {
            file.Write(path);
            return File.ReadAllBytes(path);
        }
        finally { File.Delete(path); }
    }

    /// <summary>y = Relu(x·W + B) with an If whose branches hold initializers and a Constant with a tensor attribute.</summary>
    public static ModelProto Model(int width)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "onnxtune-fuzz", Graph = new GraphProto { Name = "fuzz" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var g = model.Graph;
        g.Input.Add(ValueInfos.Tensor("x", DataType.Float, "batch", (long)width));
        var w = new float[width * width];
        for (var i = 0; i < w.Length; i++) w[i] = (i % 17) * 0.01f;
        g.Initializer.Add(TensorProtos.Float("W", w, width, width));
        g.Initializer.Add(TensorProtos.Float("B", new float[width], width));
        g.Initializer.Add(TensorProtos.Bool("cond", [true]));
        var mm = new NodeProto { Name = "mm", OpType = "MatMul" };
        mm.Input.AddRange(["x", "W"]);
        mm.Output.Add("xw");
        var add = new NodeProto { Name = "add", OpType = "Add" };
        add.Input.AddRange(["xw", "B"]);
        add.Output.Add("h");
        var relu = new NodeProto { Name = "relu", OpType = "Relu" };
        relu.Input.Add("h");
        relu.Output.Add("y");
        var constant = new NodeProto { Name = "const", OpType = "Constant" };
        constant.Output.Add("c");
        constant.Attribute.Add(Attr.Tensor("value", TensorProtos.Float("c_value", [1f, 2f], 2)));
        var iff = new NodeProto { Name = "if", OpType = "If" };
        iff.Input.Add("cond");
        iff.Output.Add("z");
        iff.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("then", 1f) });
        iff.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("else", 2f) });
        g.Node.AddRange([mm, add, relu, constant, iff]);
        g.Output.Add(ValueInfos.Tensor("y", DataType.Float, "batch", (long)width));
        g.Output.Add(ValueInfos.Tensor("z", DataType.Float, 4L));
        return model;
    }

    private static GraphProto Branch(string name, float v)
    {
        var b = new GraphProto { Name = name };
        b.Initializer.Add(TensorProtos.Float($"{name}_v", [v, v, v, v], 4));
        var id = new NodeProto { Name = $"{name}_id", OpType = "Identity" };
        id.Input.Add($"{name}_v");
        id.Output.Add($"{name}_out");
        b.Node.Add(id);
        b.Output.Add(ValueInfos.Tensor($"{name}_out", DataType.Float, 4L));
        return b;
    }

    /// <summary>Moves W, B and the then-branch initializer to <c>weights.bin</c> (disjoint ranges); returns the file bytes.</summary>
    public static byte[] MakeExternal(ModelProto model)
    {
        var tensors = new List<TensorProto> { model.Graph.Initializer[0], model.Graph.Initializer[1], model.Graph.Node[4].Attribute[0].G.Initializer[0] };
        using var ms = new MemoryStream();
        foreach (var t in tensors)
        {
            var offset = ms.Length;
            t.RawData.WriteTo(ms);
            var length = t.RawData.Length;
            t.RawData = ByteString.Empty;
            t.DataLocation = TensorProto.Types.DataLocation.External;
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.bin" });
            t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
            t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(CultureInfo.InvariantCulture) });
        }
        return ms.ToArray();
    }

    public static string FixturePath(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    public static ArtifactManifest Manifest() => new()
    {
        Inputs = [new TensorSpec("x", "float", ["batch", "3"]), new TensorSpec("mask", "bool", ["batch", "seq"])],
        Outputs = [new TensorSpec("logits", "float", ["batch", "4"])],
        TrainableParameters = [new TensorSpec("fc.weight", "float", ["4", "3"]), new TensorSpec("fc.bias", "float", ["4"])],
        FrozenParameters = [new TensorSpec("emb", "float", ["20", "8"])],
        Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits", LabelName = "labels", LabelElementType = "int64", IgnoreIndex = -100 },
        Optimizer = new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 1e-3, MaxGradNorm = 1.0 },
        Opset = 17,
        SourceModelSha256 = new string('a', 64),
        Properties = new Dictionary<string, string> { ["task"] = "classification", ["labels"] = "labels.txt" },
    };
}

/// <summary>Structure-aware safetensors mutations shared by the safetensors, checkpoint and data-file targets.</summary>
internal static class SafeTensorsMutations
{
    public static byte[] Mutate(Mutator m, byte[] seed)
    {
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(seed);
        var header = Encoding.UTF8.GetString(seed, 8, headerLength).TrimEnd(' ');
        var data = seed[(8 + headerLength)..];
        switch (m.Next(10))
        {
            case 0 or 1 or 2 or 3:
                m.Log.Add("header json:");
                return Build(m.MutateJson(header, 0.05), data);
            case 4:
                {
                    var v = m.InterestingInt();
                    var bytes = (byte[])seed.Clone();
                    BinaryPrimitives.WriteInt64LittleEndian(bytes, v);
                    m.Log.Add($"header_length={v}");
                    return bytes;
                }
            case 5:
                {
                    // Many tensors (zero-length), sometimes with a repeated or empty name: must stay linear-time.
                    var n = m.Pick([10, 1000, 5000]);
                    var dupName = m.Pick<string?>([null, "w", ""]);
                    var sb = new StringBuilder(header.TrimEnd('}'));
                    for (var i = 0; i < n; i++)
                        sb.Append(CultureInfo.InvariantCulture, $",\"{(dupName is not null && i == n - 1 ? dupName : $"t{i}")}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[{data.Length},{data.Length}]}}");
                    sb.Append('}');
                    m.Log.Add($"+{n} empty tensors (last named {dupName ?? "uniquely"})");
                    return Build(sb.ToString(), data);
                }
            case 6:
                {
                    m.Log.Add("data:");
                    return Build(header, m.MutateBytes(data));
                }
            default:
                m.Log.Add("bytes:");
                return m.MutateBytes(seed);
        }
    }

    public static byte[] Build(string header, byte[] data)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var padded = (json.Length + 7) / 8 * 8;
        var result = new byte[8 + padded + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)padded);
        json.CopyTo(result, 8);
        result.AsSpan(8 + json.Length, padded - json.Length).Fill((byte)' ');
        data.CopyTo(result, 8 + padded);
        return result;
    }
}

internal sealed class SafeTensorsTarget : FuzzTarget
{
    private byte[] _seed = [];

    public override string Name => "safetensors";

    public override void Setup(string workDirectory) => _seed = Seeds.SafeTensors();

    public override FuzzInput Generate(Mutator m) =>
        new(new Dictionary<string, byte[]> { ["t.safetensors"] = SafeTensorsMutations.Mutate(m, _seed) });

    public override void Parse(FuzzInput input, string caseDirectory)
    {
        var file = SafeTensorsFile.Read(Path.Combine(caseDirectory, "t.safetensors"));
        foreach (var t in file.Tensors)
        {
            _ = t.DType is SafeTensorDType.F32 or SafeTensorDType.F64 ? t.ToFloatArray().Length : 0;
            _ = t.DType is SafeTensorDType.I64 or SafeTensorDType.I32 ? t.ToInt64Array().Length : 0;
        }
    }
}

/// <summary>ONNX protobuf: inline models (torch exports and a built one) or one with external data and links.</summary>
internal sealed class OnnxTarget(bool external) : FuzzTarget
{
    private readonly List<ModelProto> _seeds = [];
    private string _modelDir = "";

    private static readonly string[] Locations =
    [
        "weights.bin", "./weights.bin", "sub/../weights.bin", "sub/inner.bin", "escape.bin", "linkdir/secret.bin", "loop.bin",
        "dangling.bin", "../outside/secret.bin", "a/../../outside/secret.bin", "/etc/passwd", "", "C:\\x.bin", "\\\\server\\x.bin",
        "weights.bin\0x", "sub", "missing.bin", "weights.bin/", "sub/inlink.bin", new string('a', 300), "sub/" + new string('b', 5000),
    ];

    private static readonly string[] Numbers =
        ["0", "1", "-1", "4", "1024", "262144", "263168", "9223372036854775807", "-9223372036854775808", "99999999999999999999", "abc", "", " 1", "+5", "0x10", "1e3"];

    public override string Name => external ? "onnx-external" : "onnx";

    public override string? FixedCaseDirectory => external ? _modelDir : null;

    public override void Setup(string workDirectory)
    {
        Directory.CreateDirectory(workDirectory);
        if (!external)
        {
            foreach (var f in new[] { "embed_mean_linear.onnx", "mlp_opset11.onnx", "misc_ops_eval.onnx" })
                _seeds.Add(ModelProto.Parser.ParseFrom(File.ReadAllBytes(Seeds.FixturePath(f))));
            _seeds.Add(Seeds.Model(8));
            return;
        }
        // model/ holds weights.bin, a legit sub/inner.bin and links: into the folder (allowed) and out of it (refused).
        _modelDir = Path.Combine(workDirectory, "model");
        var outside = Path.Combine(workDirectory, "outside");
        Directory.CreateDirectory(Path.Combine(_modelDir, "sub"));
        Directory.CreateDirectory(outside);
        var model = Seeds.Model(256);
        var weights = Seeds.MakeExternal(model);
        File.WriteAllBytes(Path.Combine(_modelDir, "weights.bin"), weights);
        File.WriteAllBytes(Path.Combine(_modelDir, "sub", "inner.bin"), weights.AsSpan(0, 4096).ToArray());
        File.WriteAllBytes(Path.Combine(outside, "secret.bin"), weights);
        File.CreateSymbolicLink(Path.Combine(_modelDir, "escape.bin"), Path.Combine("..", "outside", "secret.bin"));
        File.CreateSymbolicLink(Path.Combine(_modelDir, "sub", "inlink.bin"), Path.Combine("..", "weights.bin"));
        Directory.CreateSymbolicLink(Path.Combine(_modelDir, "linkdir"), outside);
        File.CreateSymbolicLink(Path.Combine(_modelDir, "loop.bin"), "loop.bin");
        File.CreateSymbolicLink(Path.Combine(_modelDir, "dangling.bin"), "nothing-here.bin");
        _seeds.Add(model);
    }

    public override FuzzInput Generate(Mutator m)
    {
        var model = m.Pick(_seeds).Clone();
        var edits = m.Next(3);
        for (var e = 0; e < edits; e++) MutateModel(m, model);
        var bytes = model.ToByteArray();
        if (edits == 0 || m.Chance(0.3))
        {
            m.Log.Add("bytes:");
            bytes = m.MutateBytes(bytes);
        }
        return new FuzzInput(new Dictionary<string, byte[]> { ["model.onnx"] = bytes });
    }

    private static List<TensorProto> AllTensors(GraphProto g)
    {
        var list = new List<TensorProto>(g.Initializer);
        foreach (var n in g.Node)
            foreach (var a in n.Attribute)
            {
                if (a.T is not null) list.Add(a.T);
                if (a.G is not null) list.AddRange(AllTensors(a.G));
            }
        return list;
    }

    private static void MutateModel(Mutator m, ModelProto model)
    {
        var g = model.Graph;
        var tensors = g is null ? [] : AllTensors(g);
        switch (m.Next(10))
        {
            case 0 or 1 or 2 when tensors.Count > 0:
                {
                    var t = m.Pick(tensors);
                    var location = m.Pick(Locations);
                    t.DataLocation = TensorProto.Types.DataLocation.External;
                    t.ExternalData.Clear();
                    if (!m.Chance(0.1)) t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
                    var offset = m.Chance(0.6) ? m.Pick(Numbers) : null;
                    var length = m.Chance(0.6) ? m.Pick(Numbers) : null;
                    if (offset is not null) t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset });
                    if (length is not null) t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length });
                    m.Log.Add($"{t.Name}: external location='{location.Replace("\0", "\\0", StringComparison.Ordinal)}' offset={offset ?? "-"} length={length ?? "-"}");
                    break;
                }
            case 3 when g is not null:
                {
                    // Many tensors sharing one external range: the reader must not allocate it for each.
                    var n = m.Pick([2, 10, 200]);
                    for (var i = 0; i < n; i++)
                    {
                        var t = new TensorProto { Name = $"shared{i}", DataType = (int)DataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
                        t.Dims.Add(65536);
                        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.bin" });
                        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "0" });
                        if (m.Chance(0.5)) t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = "262144" });
                        g.Initializer.Add(t);
                    }
                    m.Log.Add($"+{n} tensors sharing weights.bin[0, 262144)");
                    break;
                }
            case 4 when tensors.Count > 0:
                {
                    var t = m.Pick(tensors);
                    var d = m.InterestingInt();
                    if (t.Dims.Count > 0 && m.Chance(0.5)) t.Dims[m.Next(t.Dims.Count)] = d; else t.Dims.Add(d);
                    t.DataType = m.Chance(0.3) ? m.Next(30) - 2 : t.DataType;
                    m.Log.Add($"{t.Name}: dim {d}, data_type {t.DataType}");
                    break;
                }
            case 5 when tensors.Count > 0:
                {
                    var t = m.Pick(tensors);
                    var len = t.RawData.Length == 0 ? 0 : m.Next(t.RawData.Length);
                    t.RawData = ByteString.CopyFrom(t.RawData.Span[..len]);
                    m.Log.Add($"{t.Name}: raw_data truncated to {len}");
                    break;
                }
            case 6:
                {
                    var what = m.Next(4);
                    if (what == 0) model.Graph = null;
                    else if (what == 1) model.OpsetImport.Clear();
                    else if (what == 2 && g is not null) { g.Node.Clear(); g.Output.Clear(); }
                    else model.IrVersion = m.InterestingInt();
                    m.Log.Add($"structure edit {what}");
                    break;
                }
            case 7 when g is not null:
                {
                    // Nested subgraphs holding an external tensor.
                    var depth = m.Pick([1, 10, 60]);
                    var inner = new GraphProto { Name = "deep" };
                    var t = new TensorProto { Name = "deep_t", DataType = (int)DataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
                    t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = m.Pick(Locations) });
                    inner.Initializer.Add(t);
                    for (var i = 0; i < depth; i++)
                    {
                        var node = new NodeProto { OpType = "If", Name = $"nest{i}" };
                        node.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = inner });
                        inner = new GraphProto { Name = $"g{i}" };
                        inner.Node.Add(node);
                    }
                    g.Node.Add(inner.Node[0]);
                    m.Log.Add($"+subgraphs nested {depth} with external tensor '{t.ExternalData[0].Value}'");
                    break;
                }
            case 8 when g is not null:
                {
                    var node = new NodeProto { OpType = "Constant", Name = "attr_t" };
                    var t = TensorProtos.Float("attr_ext", [1f], 1);
                    t.RawData = ByteString.Empty;
                    t.DataLocation = TensorProto.Types.DataLocation.External;
                    t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = m.Pick(Locations) });
                    node.Attribute.Add(new AttributeProto { Name = "values", Type = AttributeProto.Types.AttributeType.Tensors, Tensors = { t } });
                    g.Node.Add(node);
                    m.Log.Add($"+Constant with external tensors attribute '{t.ExternalData[0].Value}'");
                    break;
                }
            default:
                if (tensors.Count > 0)
                {
                    var t = m.Pick(tensors);
                    t.DataLocation = (TensorProto.Types.DataLocation)m.Next(4);
                    m.Log.Add($"{t.Name}: data_location {(int)t.DataLocation}");
                }
                break;
        }
    }

    public override void Parse(FuzzInput input, string caseDirectory)
    {
        var path = Path.Combine(caseDirectory, "model.onnx");
        if (external) _ = OnnxModelReader.Load(path);
        else _ = OnnxModelReader.Parse(File.ReadAllBytes(path), path);
    }
}

internal sealed class CheckpointTarget : FuzzTarget
{
    private string _json = "";
    private byte[] _tensors = [];

    public override string Name => "checkpoint";

    public override void Setup(string workDirectory)
    {
        var meta = new CheckpointMetadata
        {
            Step = 12,
            LearningRate = 1e-3,
            Schedule = LearningRateSchedules.CosineWithWarmup(1e-3, 10, 100).State,
            Parameters = [new CheckpointTensor("w", "float", [3, 4]), new CheckpointTensor("b", "float", [4])],
            OptimizerStates = [new CheckpointTensor("w.exp_avg", "float", [3, 4]), new CheckpointTensor("b.exp_avg", "float", [4])],
            UserProperties = new Dictionary<string, string> { ["epoch"] = "2" },
        };
        CheckpointStore.Save(workDirectory, meta,
        [
            SafeTensor.FromFloats("w", new float[12], 3, 4), SafeTensor.FromFloats("b", [1f, 2f, 3f, 4f], 4),
            SafeTensor.FromFloats("w.exp_avg", new float[12], 3, 4), SafeTensor.FromFloats("b.exp_avg", new float[4], 4),
        ]);
        _json = File.ReadAllText(Path.Combine(workDirectory, CheckpointStore.MetadataFileName));
        _tensors = File.ReadAllBytes(Path.Combine(workDirectory, CheckpointStore.TensorsFileName));
    }

    public override FuzzInput Generate(Mutator m)
    {
        var json = _json;
        var tensors = _tensors;
        var files = new Dictionary<string, byte[]>();
        switch (m.Next(10))
        {
            case 0 or 1 or 2 or 3 or 4:
                m.Log.Add("checkpoint.json:");
                json = m.MutateJson(json);
                break;
            case 5 or 6 or 7:
                {
                    m.Log.Add("tensors:");
                    tensors = SafeTensorsMutations.Mutate(m, tensors);
                    if (m.Chance(0.7) && JsonNode.Parse(json) is JsonObject o)
                    {
                        // Make the hash match so the safetensors reader and the shape checks run.
                        o["tensors_sha256"] = Convert.ToHexStringLower(SHA256.HashData(tensors));
                        json = o.ToJsonString();
                        m.Log.Add("hash fixed up");
                    }
                    break;
                }
            case 8:
                m.Log.Add("both:");
                json = m.MutateJson(json);
                tensors = SafeTensorsMutations.Mutate(m, tensors);
                break;
            default:
                {
                    var drop = m.Pick([CheckpointStore.MetadataFileName, CheckpointStore.TensorsFileName]);
                    m.Log.Add($"without {drop}");
                    if (drop != CheckpointStore.MetadataFileName) files[CheckpointStore.MetadataFileName] = Encoding.UTF8.GetBytes(json);
                    if (drop != CheckpointStore.TensorsFileName) files[CheckpointStore.TensorsFileName] = tensors;
                    return new FuzzInput(files);
                }
        }
        files[CheckpointStore.MetadataFileName] = Encoding.UTF8.GetBytes(json);
        files[CheckpointStore.TensorsFileName] = tensors;
        return new FuzzInput(files);
    }

    public override void Parse(FuzzInput input, string caseDirectory)
    {
        var (meta, _) = CheckpointStore.Load(caseDirectory);
        if (meta.Schedule is { } s) _ = LearningRateSchedules.FromState(s).LearningRateAt(meta.Step);
    }
}

internal sealed class ManifestTarget : FuzzTarget
{
    private string _json = "";

    public override string Name => "manifest";

    public override void Setup(string workDirectory) => _json = JsonSerializer.Serialize(Seeds.Manifest(), ArtifactManifest.JsonOptions);

    public override FuzzInput Generate(Mutator m) =>
        new(new Dictionary<string, byte[]> { [ArtifactFiles.ManifestFileName] = Encoding.UTF8.GetBytes(m.MutateJson(_json)) });

    public override void Parse(FuzzInput input, string caseDirectory)
    {
        var manifest = ArtifactManifest.Load(caseDirectory);
        // What the runtime reads right after loading.
        foreach (var s in manifest.Inputs.Concat(manifest.TrainableParameters)) _ = s.FixedDims;
        _ = manifest.Optimizer.StateSuffixes;
    }
}

/// <summary>SQLite JSON columns of the feedback store: tensors and metadata.</summary>
internal sealed class FeedbackColumnTarget : FuzzTarget
{
    private string _tensors = "";
    private string _metadata = "";

    public override string Name => "feedback-columns";

    public override void Setup(string workDirectory)
    {
        _tensors = FeedbackJson.WriteTensors(new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Float([0.5f, -1f, 2f, 3f, 4f, 5f], 2, 3),
            ["ids"] = TensorData.Int64([101L, 2054L, 102L], 1, 3),
        });
        _metadata = FeedbackJson.WriteMetadata(new Dictionary<string, string> { ["client"] = "web", ["session"] = "42" });
    }

    public override FuzzInput Generate(Mutator m)
    {
        var tensors = m.Chance(0.75);
        m.Log.Add(tensors ? "tensors column:" : "metadata column:");
        var text = m.MutateJson(tensors ? _tensors : _metadata);
        return new FuzzInput(new Dictionary<string, byte[]> { [tensors ? "tensors.json" : "metadata.json"] = Encoding.UTF8.GetBytes(text) }) { Text = text };
    }

    public override void Parse(FuzzInput input, string caseDirectory)
    {
        if (input.Files.ContainsKey("tensors.json")) _ = FeedbackJson.ReadTensors(input.Text!, "feedback.db record r-1");
        else _ = FeedbackJson.ReadMetadata(input.Text!, "feedback.db record r-1");
    }
}

internal sealed class GoldenSetTarget : FuzzTarget
{
    private string _seed = "";

    public override string Name => "golden-set";

    public override void Setup(string workDirectory)
    {
        var tensors = FeedbackJson.WriteTensors(new Dictionary<string, TensorData> { ["x"] = TensorData.Float([1f, 2f, 3f], 1, 3) });
        _seed = string.Join('\n',
            "{\"text\":\"book a flight to paris\",\"label\":\"book_flight\"}",
            "{\"text\":\"what is my balance\",\"label\":3}",
            "",
            $"{{\"tensors\":{tensors},\"label\":\"cancel\"}}",
            "{\"text\":\"caf\\u00e9 \\ud83d\\ude00\",\"label\":\"other\"}") + "\n";
    }

    public override FuzzInput Generate(Mutator m) =>
        new(new Dictionary<string, byte[]> { ["golden.jsonl"] = Encoding.UTF8.GetBytes(m.MutateJsonLines(_seed)) });

    public override void Parse(FuzzInput input, string caseDirectory) => _ = FeedbackJson.ReadGoldenSet(Path.Combine(caseDirectory, "golden.jsonl"));
}

/// <summary>The CLI's labelled text files: JSON Lines and CSV.</summary>
internal sealed class TextDataTarget : FuzzTarget
{
    private const string Jsonl =
        "{\"text\":\"book a flight\",\"label\":\"book_flight\"}\n{\"text\":\"how hot is it\",\"label\":0.75}\n" +
        "{\"text\":\"two targets\",\"label\":[0.5,-1.25]}\n\n{\"text\":\"unlabelled\"}\n{\"text\":\"null label\",\"label\":null}\n";

    private const string Csv = "\uFEFFtext,label\n\"hello, world\",greet\n\"multi\nline \"\"quoted\"\"\",other\r\nplain,1.5\n,empty\n";

    public override string Name => "text-data";

    public override void Setup(string workDirectory) { }

    public override FuzzInput Generate(Mutator m) => m.Chance(0.5)
        ? new(new Dictionary<string, byte[]> { ["data.jsonl"] = Encoding.UTF8.GetBytes(m.MutateJsonLines(Jsonl)) })
        : new(new Dictionary<string, byte[]> { ["data.csv"] = Encoding.UTF8.GetBytes(m.MutateCsv(Csv)) });

    public override void Parse(FuzzInput input, string caseDirectory) =>
        _ = TextDataFile.Read(Path.Combine(caseDirectory, input.Files.Keys.Single()));
}

/// <summary>The CLI's tensor data file (safetensors) checked against a manifest, then a batch gathered.</summary>
internal sealed class TensorDataTarget : FuzzTarget
{
    private byte[] _seed = [];
    private readonly ArtifactManifest _manifest = new()
    {
        Inputs = [new TensorSpec("x", "float", ["batch", "3"]), new TensorSpec("mask", "bool", ["batch", "2"])],
        Loss = new LossSpec { Kind = LossKind.CrossEntropy, OutputName = "logits", LabelName = "labels", LabelElementType = "int64" },
    };

    public override string Name => "tensor-data";

    public override void Setup(string workDirectory) => _seed = Seeds.ToBytes(new SafeTensorsFile(
    [
        SafeTensor.FromFloats("x", [1f, 2f, 3f, 4f, 5f, 6f, 7f, 8f, 9f, 10f, 11f, 12f], 4, 3),
        SafeTensor.FromBools("mask", [true, true, false, true, true, false, true, true], 4, 2),
        SafeTensor.FromInt64s("labels", [0L, 1L, 2L, 1L], 4),
    ]));

    public override FuzzInput Generate(Mutator m) =>
        new(new Dictionary<string, byte[]> { ["data.safetensors"] = SafeTensorsMutations.Mutate(m, _seed) });

    public override void Parse(FuzzInput input, string caseDirectory)
    {
        var data = TensorDataFile.Open(Path.Combine(caseDirectory, "data.safetensors"), _manifest);
        _ = data.CreateBatch([0, data.SampleCount - 1]);
    }
}
