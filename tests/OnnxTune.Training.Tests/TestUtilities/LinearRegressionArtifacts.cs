using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Training.Tests.TestUtilities;

/// <summary>
/// A hand-written artifacts folder for linear regression y = x·W + b (x [batch,3], W [3,2], b [2]) with MSE loss
/// (mean over all elements). The backward nodes are written by hand: dL/dy = 2(y - t)/N, dW = xᵀ·dL/dy,
/// db = Σ_batch dL/dy. Independent of the autodiff rules, so it tests the runtime alone.
/// </summary>
public static class LinearRegressionArtifacts
{
    public const int In = 3;
    public const int Out = 2;
    public static readonly float[] InitialW = [0.1f, -0.2f, 0.3f, 0.05f, -0.15f, 0.25f];
    public static readonly float[] InitialB = [0.01f, -0.02f];

    /// <param name="dir">Target folder.</param>
    /// <param name="optimizer">Optimizer settings.</param>
    /// <param name="trainingDropout">Adds Dropout(x, 0.5, training_mode=true) to the training graph's forward pass
    /// only (its backward ignores the mask): for tests of random-op seeding, not of gradients.</param>
    public static void Create(string dir, OptimizerSpec optimizer, bool trainingDropout = false)
    {
        Directory.CreateDirectory(dir);
        var manifest = new ArtifactManifest
        {
            Inputs = [new TensorSpec("x", "float", ["batch", "3"])],
            Outputs = [new TensorSpec("y", "float", ["batch", "2"])],
            TrainableParameters = [new TensorSpec("W", "float", ["3", "2"]), new TensorSpec("b", "float", ["2"])],
            Loss = new LossSpec { Kind = LossKind.Mse, OutputName = "y", LabelName = "labels", LabelElementType = "float" },
            Optimizer = optimizer,
            Opset = 17,
        };
        OnnxModelWriter.Save(Inference(), Path.Combine(dir, manifest.Files.InferenceModel));
        OnnxModelWriter.Save(Training(withBackward: true, trainingDropout), Path.Combine(dir, manifest.Files.TrainingModel));
        OnnxModelWriter.Save(Training(withBackward: false), Path.Combine(dir, manifest.Files.EvalModel));
        OnnxModelWriter.Save(OptimizerGraphBuilder.Build(manifest.TrainableParameters, optimizer, 17), Path.Combine(dir, manifest.Files.OptimizerModel));
        manifest.Save(dir);
    }

    private static ModelProto Model(GraphProto g)
    {
        var m = new ModelProto { IrVersion = 8, Graph = g, ProducerName = "test" };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return m;
    }

    private static ModelProto Inference()
    {
        var g = new GraphProto { Name = "linreg" };
        var e = new GraphEditor(g);
        e.AddInput(ValueInfos.Tensor("x", DataType.Float, "batch", 3L));
        e.AddInitializer(TensorProtos.Float("W", InitialW, In, Out), makeUnique: false);
        e.AddInitializer(TensorProtos.Float("b", InitialB, Out), makeUnique: false);
        var xw = e.Add("MatMul", ["x", "W"], "xw");
        e.AddNode("Add", [xw, "b"], [e.Reserve("y")]);
        e.AddOutput(ValueInfos.Tensor("y", DataType.Float, "batch", 2L));
        return Model(g);
    }

    private static ModelProto Training(bool withBackward, bool dropout = false)
    {
        var g = new GraphProto { Name = withBackward ? "linreg_train" : "linreg_eval" };
        var e = new GraphEditor(g);
        e.AddInput(ValueInfos.Tensor("x", DataType.Float, "batch", 3L));
        e.AddInput(ValueInfos.Tensor("labels", DataType.Float, "batch", 2L));
        e.AddInput(ValueInfos.Tensor("W", DataType.Float, 3L, 2L));
        e.AddInput(ValueInfos.Tensor("b", DataType.Float, 2L));
        var input = "x";
        if (dropout)
        {
            var ratio = e.ConstantFloat("ratio", 0.5f);
            var mode = e.AddInitializer(TensorProtos.Bool("training_mode", [true]));
            input = e.Add("Dropout", ["x", ratio, mode], "x_dropped");
        }
        var xw = e.Add("MatMul", [input, "W"], "xw");
        e.AddNode("Add", [xw, "b"], [e.Reserve("y")]);
        var d = e.Add("Sub", ["y", "labels"], "diff");
        var sq = e.Add("Mul", [d, d], "sq");
        e.AddNode("ReduceMean", [sq], [e.Reserve("loss")], Attr.Int("keepdims", 0));
        e.AddOutput(ValueInfos.Tensor("loss", DataType.Float));
        if (!withBackward)
        {
            e.AddOutput(ValueInfos.Tensor("y", DataType.Float, "batch", 2L));
            return Model(g);
        }
        var n = e.Add("Cast", [e.Add("Size", ["y"], "n_int")], "n", Attr.Int("to", (long)DataType.Float));
        var dy = e.Add("Div", [e.Add("Mul", [d, e.ConstantFloat("two", 2f)], "d2"), n], "dy");
        var dw = e.Add("MatMul", [e.Add("Transpose", ["x"], "xt", Attr.Ints("perm", 1, 0)), dy], "dW");
        var db = e.Add("ReduceSum", [dy, e.ConstantInt64s("axis0", 0)], "db", Attr.Int("keepdims", 0));
        e.AddInput(ValueInfos.Tensor("lazy_reset_grad", DataType.Bool));
        foreach (var (p, grad, shape) in new[] { ("W", dw, new object?[] { 3L, 2L }), ("b", db, new object?[] { 2L }) })
        {
            e.AddInput(ValueInfos.Tensor(p + ".grad.accumulation.buffer", DataType.Float, shape));
            var sum = e.Add("Add", [p + ".grad.accumulation.buffer", grad], p + "_acc");
            e.AddNode("Where", ["lazy_reset_grad", grad, sum], [e.Reserve(p + ".grad.accumulation.out")]);
            e.AddOutput(ValueInfos.Tensor(p + ".grad.accumulation.out", DataType.Float, shape));
        }
        var model = Model(g);
        // The builder's accumulation form, written by hand: declare it as the builder does.
        model.MetadataProps.Add(new global::Onnx.StringStringEntryProto { Key = OnnxTune.Autodiff.Artifacts.ArtifactContract.AccumulationTailKey, Value = OnnxTune.Autodiff.Artifacts.ArtifactContract.AccumulationTailFormat });
        return model;
    }

    /// <summary>Reference loss and gradients in float64.</summary>
    public static (double Loss, double[] GradW, double[] GradB) Reference(double[] w, double[] b, float[] x, float[] t, int batch)
    {
        var gw = new double[In * Out];
        var gb = new double[Out];
        double loss = 0;
        var n = batch * Out;
        for (var i = 0; i < batch; i++)
            for (var o = 0; o < Out; o++)
            {
                var y = b[o];
                for (var k = 0; k < In; k++) y += x[i * In + k] * w[k * Out + o];
                var diff = y - t[i * Out + o];
                loss += diff * diff / n;
                var dy = 2 * diff / n;
                gb[o] += dy;
                for (var k = 0; k < In; k++) gw[k * Out + o] += x[i * In + k] * dy;
            }
        return (loss, gw, gb);
    }
}
