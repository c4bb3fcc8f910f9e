using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Optimizers;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Migration.Import;

/// <summary>
/// The optimizer graph for ORT's <c>AdamWOptimizer</c> with <c>adam_mode = 1</c> (HuggingFace's AdamW, ORT's default),
/// with OnnxTune's optimizer-graph contract (<see cref="OptimizerGraphBuilder"/>: <c>learning_rate</c>, <c>step</c>,
/// per parameter <c>p</c>, <c>p.grad</c>, <c>p.exp_avg</c>, <c>p.exp_avg_sq</c>; outputs with <c>.out</c>):
/// <c>m = β1·m + (1-β1)·g</c>; <c>v = β2·v + (1-β2)·g²</c>; <c>p -= lr·√(1-β2^t)/(1-β1^t) · m/(√v + ε)</c> (without the
/// factor when <c>correct_bias = 0</c>); then <c>p -= lr·wd·p</c>. It carries no optimizer signature, so the training
/// engine runs this graph instead of its fused PyTorch-AdamW kernel.
/// </summary>
internal static class HuggingFaceAdamWGraph
{
    public static ModelProto Build(IReadOnlyList<TensorSpec> parameters, OptimizerSpec spec, bool correctBias, long opset)
    {
        var graph = new GraphProto { Name = "huggingface_adamw_optimizer" };
        var counter = 0;
        string Op(string type, string[] inputs, string? output = null)
        {
            var name = output ?? $"hf_adamw/{type}_{counter++}";
            graph.Node.Add(new NodeProto { OpType = type, Name = $"hf_adamw/node_{counter++}", Input = { inputs }, Output = { name } });
            return name;
        }
        string Const(double value, DataType type)
        {
            var name = $"hf_adamw/const_{counter++}";
            graph.Initializer.Add(type == DataType.Double ? TensorProtos.Double(name, [value]) : TensorProtos.Float(name, [(float)value]));
            return name;
        }
        string Cast(string input, DataType to)
        {
            var name = $"hf_adamw/cast_{counter++}";
            graph.Node.Add(new NodeProto { OpType = "Cast", Name = name + "_node", Input = { input }, Output = { name }, Attribute = { new AttributeProto { Name = "to", I = (long)to, Type = AttributeProto.Types.AttributeType.Int } } });
            return name;
        }
        ValueInfoProto Info(string name, DataType type, long[] dims)
        {
            var shape = new TensorShapeProto();
            foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
            return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
        }
        graph.Input.Add(Info(OptimizerGraphBuilder.LearningRateInput, DataType.Float, []));
        graph.Input.Add(Info(OptimizerGraphBuilder.StepInput, DataType.Int64, []));

        // Scalars in float64, as Python computes them, then cast to the parameter type.
        var lr = Cast(OptimizerGraphBuilder.LearningRateInput, DataType.Double);
        var step = Cast(OptimizerGraphBuilder.StepInput, DataType.Double);
        string BiasCorrection(double beta) => Op("Sub", [Const(1, DataType.Double), Op("Pow", [Const(beta, DataType.Double), step])]);
        var stepSize = correctBias ? Op("Div", [Op("Mul", [lr, Op("Sqrt", [BiasCorrection(spec.Beta2)])]), BiasCorrection(spec.Beta1)]) : lr;
        var decay = Op("Mul", [lr, Const(spec.WeightDecay, DataType.Double)]);
        var scalars = new Dictionary<DataType, (string StepSize, string Decay)>();
        foreach (var p in parameters)
        {
            var type = p.ElementType == "double" ? DataType.Double : DataType.Float;
            if (!scalars.TryGetValue(type, out var s))
                scalars[type] = s = type == DataType.Double ? (stepSize, decay) : (Cast(stepSize, DataType.Float), Cast(decay, DataType.Float));
            var dims = p.FixedDims;
            string[] inputs = [p.Name, p.Name + OptimizerGraphBuilder.GradientSuffix, p.Name + ".exp_avg", p.Name + ".exp_avg_sq"];
            foreach (var i in inputs) graph.Input.Add(Info(i, type, dims));
            foreach (var i in inputs.Where((_, k) => k != 1)) graph.Output.Add(Info(i + OptimizerGraphBuilder.OutputSuffix, type, dims));
            var (param, g, m, v) = (inputs[0], inputs[1], inputs[2], inputs[3]);
            var mNew = Op("Add", [Op("Mul", [m, Const(spec.Beta1, type)]), Op("Mul", [g, Const(1 - spec.Beta1, type)])], m + OptimizerGraphBuilder.OutputSuffix);
            var vNew = Op("Add", [Op("Mul", [v, Const(spec.Beta2, type)]), Op("Mul", [Op("Mul", [g, g]), Const(1 - spec.Beta2, type)])], v + OptimizerGraphBuilder.OutputSuffix);
            var denom = Op("Add", [Op("Sqrt", [vNew]), Const(spec.Epsilon, type)]);
            var stepped = Op("Sub", [param, Op("Mul", [Op("Div", [mNew, denom]), s.StepSize])], spec.WeightDecay > 0 ? null : param + OptimizerGraphBuilder.OutputSuffix);
            if (spec.WeightDecay > 0)
                Op("Sub", [stepped, Op("Mul", [stepped, s.Decay])], param + OptimizerGraphBuilder.OutputSuffix);
        }
        var model = new ModelProto { IrVersion = 8, ProducerName = "OnnxTune.Migration", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Math.Max(13, Math.Min(opset, 18)) });
        model.MetadataProps.Add(new StringStringEntryProto { Key = "onnxtune.migration.optimizer", Value = $"huggingface-adamw;beta1={spec.Beta1:R};beta2={spec.Beta2:R};eps={spec.Epsilon:R};weight_decay={spec.WeightDecay:R};correct_bias={correctBias}" });
        return model;
    }
}
