using Google.Protobuf;
using global::Onnx;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using OnnxTune.Onnx.Tests.TestUtilities;

namespace OnnxTune.Onnx.Tests.ModelIO;

public sealed class OnnxModelReaderWriterTests
{
    [Fact]
    public void Save_then_Load_round_trips_nodes_initializers_opsets_and_metadata()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("model.onnx");
        var original = SampleModels.AddRelu();

        OnnxModelWriter.Save(original, path);
        var loaded = OnnxModelReader.Load(path);

        Assert.Equal(original, loaded);
        Assert.Equal(["Mul", "Relu"], loaded.Graph.Node.Select(n => n.OpType));
        Assert.Equal(["x", "w"], loaded.Graph.Node[0].Input);
        Assert.Equal("hello", loaded.Graph.Node[1].GetString("note", ""));
        Assert.Equal([2L, 0L, 1L], loaded.Graph.Node[1].GetInts("perm")!);
        Assert.Equal([1f, -2f, 0.5f], TensorProtos.ToFloatArray(loaded.Graph.Initializer.Single(t => t.Name == "w")));
        Assert.Equal([0L, 1L], TensorProtos.ToInt64Array(loaded.Graph.Initializer.Single(t => t.Name == "axes")));
        Assert.Equal([("", 17L), ("com.example", 2L)], loaded.OpsetImport.Select(o => (o.Domain, o.Version)));
        Assert.Equal(
            [("onnxtune.optimizer", "adamw(lr=0.001)"), ("author", "tests")],
            loaded.MetadataProps.Select(p => (p.Key, p.Value)));
        Assert.Equal(3L, loaded.ModelVersion);
        Assert.Equal("onnxtune-tests", loaded.ProducerName);
    }

    [Fact]
    public void Saved_file_holds_exactly_the_ToBytes_serialisation()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("model.onnx");
        var model = SampleModels.AddRelu();

        OnnxModelWriter.Save(model, path);

        Assert.Equal(OnnxModelWriter.ToBytes(model), File.ReadAllBytes(path));
        Assert.Equal(model, OnnxModelReader.Parse(OnnxModelWriter.ToBytes(model)));
    }

    [Fact]
    public void Save_replaces_an_existing_model()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("model.onnx");
        OnnxModelWriter.Save(SampleModels.AddRelu(), path);
        var second = SampleModels.AddRelu();
        second.MetadataProps.Clear();
        second.Graph.Node[1].OpType = "Sigmoid";

        OnnxModelWriter.Save(second, path);

        var loaded = OnnxModelReader.Load(path);
        Assert.Equal("Sigmoid", loaded.Graph.Node[1].OpType);
        Assert.Empty(loaded.MetadataProps);
        Assert.Equal(["model.onnx"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Missing_file_throws_format_exception_naming_the_path()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("nope.onnx");

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public void Empty_file_throws_format_exception_naming_the_file()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("empty.onnx");
        File.WriteAllBytes(path, []);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("empty", e.Message);
    }

    [Fact]
    public void Garbage_file_throws_format_exception_naming_the_file()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("garbage.onnx");
        File.WriteAllText(path, "This is definitely not an ONNX model, just some text.\n");

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Model_truncated_inside_the_graph_throws_corrupt_or_truncated_with_inner_protobuf_error()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("truncated.onnx");
        var bytes = OnnxModelWriter.ToBytes(SampleModels.AddRelu());
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));

        Assert.Contains(path, e.Message);
        Assert.Contains("corrupt or truncated", e.Message);
        Assert.IsType<InvalidProtocolBufferException>(e.InnerException);
    }

    [Fact]
    public void Every_truncation_either_parses_or_throws_only_the_format_exception()
    {
        var bytes = OnnxModelWriter.ToBytes(SampleModels.AddRelu());
        var parsed = 0;
        for (var n = 1; n < bytes.Length; n++)
        {
            try
            {
                OnnxModelReader.Parse(bytes.AsSpan(0, n), "cut.onnx");
                parsed++;
            }
            catch (OnnxModelFormatException e)
            {
                Assert.Contains("cut.onnx", e.Message);
            }
        }
        // Only prefixes ending exactly on a top-level field boundary after the graph and the first opset_import
        // entry parse: after opset 1, after opset 2, after metadata entry 1.
        Assert.Equal(3, parsed);
    }

    [Fact]
    public void Model_without_graph_is_rejected()
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "x" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Parse(model.ToByteArray(), "nograph.onnx"));

        Assert.Contains("nograph.onnx", e.Message);
        Assert.Contains("no graph", e.Message);
    }

    [Fact]
    public void Model_without_opset_import_is_rejected()
    {
        var model = SampleModels.AddRelu();
        model.OpsetImport.Clear();

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Parse(model.ToByteArray(), "noopset.onnx"));

        Assert.Contains("noopset.onnx", e.Message);
        Assert.Contains("opset_import", e.Message);
    }

    [Fact]
    public void Parse_of_empty_span_names_the_source()
    {
        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Parse([], "mem"));
        Assert.Contains("'mem' is empty", e.Message);
    }

    [Fact]
    public void Load_and_Save_reject_null_or_empty_arguments()
    {
        Assert.Throws<ArgumentException>(() => OnnxModelReader.Load(""));
        Assert.Throws<ArgumentNullException>(() => OnnxModelReader.Load(null!));
        Assert.Throws<ArgumentNullException>(() => OnnxModelWriter.Save(null!, "x.onnx"));
    }

    [Fact]
    public void Loading_a_folder_throws_format_exception_naming_the_path()
    {
        using var dir = new TempDirectory();

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(dir.Path));

        Assert.Contains(dir.Path, e.Message);
        Assert.Contains("folder", e.Message);
    }

    [Theory]
    [InlineData(typeof(UnauthorizedAccessException))]
    [InlineData(typeof(IOException))]
    [InlineData(typeof(System.Security.SecurityException))]
    public void Read_errors_become_format_exceptions_naming_the_file(Type errorType)
    {
        var error = (Exception)Activator.CreateInstance(errorType, "denied")!;

        var e = Assert.Throws<OnnxModelFormatException>(() =>
            OnnxModelReader.ReadFile<byte[]>("/m/model.onnx", () => throw error, "ONNX model file '/m/model.onnx'"));

        Assert.Same(error, e.InnerException);
        Assert.Contains("'/m/model.onnx'", e.Message);
        Assert.Contains("denied", e.Message);
    }
}
