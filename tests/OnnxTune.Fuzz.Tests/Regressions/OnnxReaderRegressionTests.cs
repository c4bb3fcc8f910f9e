using System.Globalization;
using Google.Protobuf;
using global::Onnx;
using OnnxTune.Fuzz.Tests.Fuzzing;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;

namespace OnnxTune.Fuzz.Tests.Regressions;

public sealed class OnnxReaderRegressionTests
{
    /// <summary>The seed model with W, B and a subgraph tensor in weights.bin; returns the model path.</summary>
    private static string WriteExternalModel(TempFolder dir, Action<ModelProto>? edit = null, string folder = "model")
    {
        var model = Seeds.Model(64);
        var weights = Seeds.MakeExternal(model);
        dir.Write(Path.Combine(folder, "weights.bin"), weights);
        edit?.Invoke(model);
        var path = dir.Combine(folder, "model.onnx");
        OnnxModelWriter.Save(model, path);
        return path;
    }

    private static void Point(TensorProto t, string location, long offset = 0, long? length = null)
    {
        t.RawData = ByteString.Empty;
        t.DataLocation = TensorProto.Types.DataLocation.External;
        t.ExternalData.Clear();
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
        if (length is { } l) t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = l.ToString(CultureInfo.InvariantCulture) });
    }

    private static TensorProto W(ModelProto m) => m.Graph.Initializer.Single(t => t.Name == "W");

    [Fact]
    public void External_model_with_disjoint_ranges_loads_with_the_default_budget()
    {
        using var dir = new TempFolder();
        var model = OnnxModelReader.Load(WriteExternalModel(dir));
        Assert.Equal(64 * 64, TensorProtos.ToFloatArray(W(model)).Length);
    }

    [Fact]
    public void Many_tensors_sharing_one_range_hit_the_budget_instead_of_allocating_it_each_time()
    {
        using var dir = new TempFolder();
        var path = WriteExternalModel(dir, m =>
        {
            for (var i = 0; i < 5000; i++)
            {
                var t = new TensorProto { Name = $"copy{i}", DataType = (int)TensorProto.Types.DataType.Float };
                t.Dims.Add(64 * 64);
                Point(t, "weights.bin", 0, 64 * 64 * 4);
                m.Graph.Initializer.Add(t);
            }
        });
        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("budget", e.Message);
        Assert.Contains("model.onnx", e.Message);
        // 5000 x 16 KiB would be 80 MB (and 1000 x a 1 GB range, 1 TB); the refusal comes after the file's size
        // plus the 16 MiB allowance for shared ranges (and the per-tensor overhead).
        Assert.True(allocated < 40_000_000, $"allocated {allocated:N0} bytes");
    }

    [Fact]
    public void MaxExternalDataBytes_caps_or_widens_the_budget()
    {
        using var dir = new TempFolder();
        var path = WriteExternalModel(dir);
        Assert.Contains("MaxExternalDataBytes", Assert.Throws<OnnxModelFormatException>(() =>
            OnnxModelReader.Load(path, new OnnxModelReaderOptions { MaxExternalDataBytes = 1000 })).Message);

        var shared = WriteExternalModel(dir, m =>
        {
            var t = new TensorProto { Name = "copy", DataType = (int)TensorProto.Types.DataType.Float };
            t.Dims.Add(64 * 64);
            Point(t, "weights.bin", 0, 64 * 64 * 4);
            m.Graph.Initializer.Add(t);
        }, folder: "shared");
        // One tensor sharing W's range fits the default allowance, but not a cap of the file's size.
        Assert.NotNull(OnnxModelReader.Load(shared));
        Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(shared, new OnnxModelReaderOptions { MaxExternalDataBytes = new FileInfo(Path.Combine(Path.GetDirectoryName(shared)!, "weights.bin")).Length }));
        Assert.NotNull(OnnxModelReader.Load(shared, new OnnxModelReaderOptions { MaxExternalDataBytes = 1 << 20 }));
    }

    [Fact]
    public void A_file_symlink_inside_the_model_folder_cannot_reach_outside_it()
    {
        using var dir = new TempFolder();
        dir.Write("secret.bin", new byte[64 * 64 * 4]);
        var path = WriteExternalModel(dir, m => Point(W(m), "escape.bin"));
        File.CreateSymbolicLink(dir.Combine("model", "escape.bin"), Path.Combine("..", "secret.bin"));

        var e = Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));
        Assert.Contains("escape.bin", e.Message);
        Assert.Contains("outside the model's folder", e.Message);
    }

    [Fact]
    public void A_folder_symlink_inside_the_model_folder_cannot_reach_outside_it()
    {
        using var dir = new TempFolder();
        dir.Write(Path.Combine("elsewhere", "secret.bin"), new byte[64 * 64 * 4]);
        var path = WriteExternalModel(dir, m => Point(W(m), "linked/secret.bin"));
        Directory.CreateSymbolicLink(dir.Combine("model", "linked"), dir.Combine("elsewhere"));

        Assert.Contains("outside the model's folder", Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path)).Message);
    }

    [Fact]
    public void Symlinks_that_stay_inside_the_folder_and_a_symlinked_model_folder_still_work()
    {
        using var dir = new TempFolder();
        var path = WriteExternalModel(dir, m => Point(W(m), "sub/w.bin", 0, 64 * 64 * 4));
        Directory.CreateDirectory(dir.Combine("model", "sub"));
        File.CreateSymbolicLink(dir.Combine("model", "sub", "w.bin"), Path.Combine("..", "weights.bin"));
        Assert.NotNull(OnnxModelReader.Load(path));

        // The whole model folder reached through a link (e.g. /tmp -> /private/tmp): the confinement is to its target.
        Directory.CreateSymbolicLink(dir.Combine("alias"), dir.Combine("model"));
        Assert.NotNull(OnnxModelReader.Load(dir.Combine("alias", "model.onnx")));
    }

    [Fact]
    public void A_symlink_loop_is_a_format_error()
    {
        using var dir = new TempFolder();
        var path = WriteExternalModel(dir, m => Point(W(m), "loop.bin"));
        File.CreateSymbolicLink(dir.Combine("model", "loop.bin"), "loop.bin");
        Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path));
    }

    [Fact]
    public void External_tensors_in_a_tensors_attribute_are_resolved_too()
    {
        using var dir = new TempFolder();
        var path = WriteExternalModel(dir, m =>
        {
            var t = TensorProtos.Float("attr", [0f], 1);
            Point(t, "../outside.bin");
            var node = new NodeProto { OpType = "Constant", Name = "c2" };
            node.Attribute.Add(new AttributeProto { Name = "values", Type = AttributeProto.Types.AttributeType.Tensors, Tensors = { t } });
            m.Graph.Node.Add(node);
        });
        Assert.Contains("outside the model's folder", Assert.Throws<OnnxModelFormatException>(() => OnnxModelReader.Load(path)).Message);
    }
}
