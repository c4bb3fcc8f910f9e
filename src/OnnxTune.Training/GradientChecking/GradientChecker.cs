using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxTune.Autodiff.Artifacts;
using OnnxTune.Autodiff.Transforms;
using OnnxTune.Onnx.Graph;
using OnnxTune.Onnx.ModelIO;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Training.GradientChecking;

/// <summary>Settings of a gradient check.</summary>
public sealed record GradientCheckOptions
{
    /// <summary>Which parameters to check (default: all float initializers).</summary>
    public ParameterSelection Selection { get; init; } = new();

    /// <summary>Loss to differentiate; null differentiates sum(output ⊙ R) for a fixed random R.</summary>
    public LossSpec? Loss { get; init; }

    /// <summary>Seed of every random choice (inputs, labels, R, sampled elements).</summary>
    public int Seed { get; init; }

    /// <summary>Value used for each symbolic dimension (default 2; e.g. <c>batch=3</c>).</summary>
    public IReadOnlyDictionary<string, long> DimValues { get; init; } = new Dictionary<string, long>();

    /// <summary>Default value of a symbolic dimension not listed in <see cref="DimValues"/>.</summary>
    public long DefaultDimValue { get; init; } = 2;

    /// <summary>
    /// Fewest values per channel that each BatchNormalization using batch statistics normalises over (default 8). The
    /// batch dims the check sizes itself (symbolic dim 0 of a layer's input, not in <see cref="DimValues"/>) are raised
    /// to reach it: over 2 values a BN layer outputs ±1 whatever its input, with a gain up to 1/√ε where the two values
    /// meet, and at such an input no finite-difference step resolves the network behind it (seen on a MobileNetV2,
    /// whose last stages are 1×1). 1 turns it off.
    /// </summary>
    public int MinBatchNormValuesPerChannel { get; init; } = 8;

    /// <summary>Explicit data inputs (float32, int64 or bool arrays with shapes); others are random.</summary>
    public IReadOnlyDictionary<string, (Array Data, long[] Shape)> Inputs { get; init; } = new Dictionary<string, (Array, long[])>();

    /// <summary>Elements per parameter compared with finite differences (sampled when larger).</summary>
    public int MaxElementsPerParameter { get; init; } = 24;

    /// <summary>
    /// Which BatchNormalization layers use batch statistics (default: those whose scale or bias is checked); the
    /// finite differences then run the same batch-statistics forward.
    /// </summary>
    public BatchNormMode BatchNorm { get; init; } = BatchNormMode.TrainableLayers;

    /// <summary>Try float64 first (tight tolerances); fall back to float32 when a kernel lacks float64.</summary>
    public bool PreferDoublePrecision { get; init; } = true;

    /// <summary>Gradient rules of the checked graph (tests substitute a wrong rule to see the check fail); null: the default registry.</summary>
    internal Autodiff.Gradients.GradientRuleRegistry? Registry { get; init; }
}

/// <summary>Result for one parameter.</summary>
/// <param name="Name">Parameter name.</param>
/// <param name="MaxRelativeError">
/// Worst |analytic − numeric| / max(|analytic|, |numeric|, floor), floor = absolute tolerance / relative tolerance.
/// </param>
/// <param name="MaxAbsoluteError">Worst |analytic − numeric|.</param>
/// <param name="ElementsChecked">How many elements were compared.</param>
/// <param name="Passed">Within tolerance.</param>
public sealed record ParameterGradientCheck(string Name, double MaxRelativeError, double MaxAbsoluteError, int ElementsChecked, bool Passed);

/// <summary>Outcome of <see cref="GradientChecker.Check"/>.</summary>
/// <param name="Parameters">Per-parameter results.</param>
/// <param name="DoublePrecision">True when the check ran in float64.</param>
/// <param name="Tolerance">Relative tolerance applied.</param>
/// <param name="Seed">Seed used.</param>
/// <param name="Loss">Loss value at the checked point.</param>
public sealed record GradientCheckReport(IReadOnlyList<ParameterGradientCheck> Parameters, bool DoublePrecision, double Tolerance, int Seed, double Loss)
{
    /// <summary>True when every parameter passed.</summary>
    public bool Passed => Parameters.All(p => p.Passed);

    /// <summary>
    /// Absolute tolerance applied: the precision's base (1e-7 in float64, 2e-3 in float32) times the gradient scale,
    /// max(1, largest |analytic gradient| of the checked parameters).
    /// </summary>
    public double AbsoluteTolerance { get; init; }

    /// <summary>The value used for each symbolic dim of the data inputs.</summary>
    public IReadOnlyDictionary<string, long> DimValues { get; init; } = new Dictionary<string, long>();
}

/// <summary>
/// Compares the gradients of OnnxTune's generated training graph with central finite differences of the forward
/// graph, both run by ONNX Runtime, in float64 when every kernel supports it. An element that misses the tolerance at
/// the first step h is retried with h/10 (and h/100 in float64): a kink (ReLU6's bounds) or strong curvature within h
/// spoils the wide difference while the narrower ones converge to the derivative; a wrong gradient misses at every step.
/// </summary>
public static class GradientChecker
{
    private const string CheckLoss = "gradient_check_objective";

    /// <summary>Runs the check.</summary>
    /// <exception cref="Autodiff.Gradients.GradientNotDefinedException">An op on the gradient path has no rule.</exception>
    public static GradientCheckReport Check(ModelProto model, GradientCheckOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new GradientCheckOptions();
        // Opset 11/12 models are checked as the opset-13 model the artifacts would train.
        model = TrainingGraphBuilder.UpgradeOpset(model);
        TrainingGraphBuilder.CheckModel(model);
        var rng = new Random(options.Seed);
        var inputs = TrainingGraphBuilder.DataInputs(model);
        // Resolve the selection on the user's model, so the check's own R tensor is never a parameter.
        var (trainableNames, _) = options.Selection.Resolve(model);
        var dimValues = ChooseDimValues(model, inputs, trainableNames, options);
        var feeds = new Dictionary<string, (Array Data, long[] Shape)>(StringComparer.Ordinal);
        foreach (var spec in inputs)
            feeds[spec.Name] = options.Inputs.TryGetValue(spec.Name, out var given) ? given : RandomInput(model, spec, dimValues, rng);

        // One plain forward run tells the output shapes (for R and labels).
        var outputShapes = ForwardShapes(model, feeds);
        var work = model.Clone();
        LossSpec loss;
        if (options.Loss is null)
        {
            var editor = new GraphEditor(work.Graph);
            var output = work.Graph.Output[0];
            var shape = outputShapes[output.Name];
            var r = Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var rName = editor.AddInitializer(TensorProtos.Float("gradient_check_R", r, shape));
            var prod = editor.Add("Mul", [output.Name, rName], "gradient_check_weighted");
            var objective = editor.Reserve(CheckLoss);
            editor.AddNode("ReduceSum", [prod], [objective], Attr.Int("keepdims", 0));
            work.Graph.Output.Clear();
            work.Graph.Output.Add(ValueInfos.Tensor(objective, DataType.Float, []));
            loss = new LossSpec { Kind = LossKind.None, OutputName = objective, LabelName = null };
        }
        else
        {
            loss = options.Loss;
            var outName = string.IsNullOrEmpty(loss.OutputName) ? model.Graph.Output[0].Name : loss.OutputName;
            if (!outputShapes.TryGetValue(outName, out var shape))
                throw new OnnxTuneException($"The loss output '{outName}' is not an output of the model.");
            if (loss.Kind != LossKind.None)
            {
                var labelName = loss.LabelName ?? "labels";
                feeds[labelName] = options.Inputs.TryGetValue(labelName, out var labels) ? labels : RandomLabels(loss, shape, rng);
            }
            if (loss.DistillationTargetName is { } teacherName)
                feeds[teacherName] = options.Inputs.TryGetValue(teacherName, out var teacher)
                    ? teacher
                    : (Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray(), shape);
            if (loss.DistillationWeightName is { } factorName)
                feeds[factorName] = options.Inputs.TryGetValue(factorName, out var factors)
                    ? factors
                    : (Enumerable.Range(0, (int)shape[0]).Select(_ => (float)rng.NextDouble()).ToArray(), [shape[0]]);
            if (loss.SampleWeightName is { } weightName)
                feeds[weightName] = options.Inputs.TryGetValue(weightName, out var weights)
                    ? weights
                    : (Enumerable.Range(0, (int)shape[..^1].Aggregate(1L, (a, b) => a * b)).Select(_ => (float)(0.25 + rng.NextDouble() * 2)).ToArray(), shape[..^1]);
        }

        var graphs = TrainingGraphBuilder.Build(work, new ParameterSelection { TrainableNames = trainableNames }, loss, gradientAccumulation: false, registry: options.Registry,
            batchNorm: new BatchNormTraining { Mode = options.BatchNorm, StatisticsAsState = false });
        var forward = graphs.TrainModeEval ?? graphs.Eval;
        var parameters = graphs.Trainable.Select(p => (p.Name, Values: TensorProtos.ToDoubleArray(work.Graph.Initializer.First(t => t.Name == p.Name)), Shape: p.FixedDims)).ToList();

        if (options.PreferDoublePrecision)
        {
            try
            {
                return Run(DoublePrecisionConverter.Convert(graphs.Training), DoublePrecisionConverter.Convert(forward), graphs, parameters, feeds, options, rng, true)
                    with { DimValues = UsedDimValues(inputs, dimValues) };
            }
            catch (OnnxRuntimeException)
            {
                // Some kernel has no float64 version (e.g. Erf): fall back to float32 with a looser tolerance.
            }
        }
        return Run(graphs.Training, forward, graphs, parameters, feeds, options, rng, false) with { DimValues = UsedDimValues(inputs, dimValues) };
    }

    /// <summary>
    /// The size of every symbolic dim: <see cref="GradientCheckOptions.DimValues"/>, else the default, raised for a batch
    /// dim (dim 0 of a BatchNormalization input) until every layer using batch statistics sees
    /// <see cref="GradientCheckOptions.MinBatchNormValuesPerChannel"/> values per channel.
    /// </summary>
    private static Dictionary<string, long> ChooseDimValues(ModelProto model, IReadOnlyList<TensorSpec> inputs, List<string> trainable, GradientCheckOptions options)
    {
        var values = new Dictionary<string, long>(options.DimValues, StringComparer.Ordinal);
        var symbols = inputs.SelectMany(i => i.Shape).Where(d => !long.TryParse(d, out _)).Distinct(StringComparer.Ordinal).ToList();
        foreach (var s in symbols) values.TryAdd(s, options.DefaultDimValue);
        if (options.MinBatchNormValuesPerChannel <= 1) return values;
        var bn = Autodiff.Artifacts.BatchNormTrainingRewrite.Select(model.Graph, trainable.ToHashSet(StringComparer.Ordinal), options.BatchNorm);
        if (bn.Count == 0) return values;
        var types = Autodiff.Gradients.TensorTypeInference.Run(model.Graph, Autodiff.Gradients.TopologicalOrder.Sort(model.Graph), new Autodiff.Gradients.ConstantTable(model.Graph));
        // A layer whose batch dim has no tracked symbol takes the data inputs' dim-0 symbol when they share one.
        var leading = inputs.Select(i => i.Shape.Count > 0 ? i.Shape[0] : "").Where(d => d.Length > 0 && !long.TryParse(d, out _)).Distinct(StringComparer.Ordinal).ToList();
        foreach (var (index, _, _) in bn)
        {
            if (!types.TryGetValue(model.Graph.Node[index].Input[0], out var t) || t.Dims is not { Length: >= 2 } dims || dims[0] is not null) continue;
            var symbol = t.SymbolAt(0) ?? (leading.Count == 1 ? leading[0] : null);
            if (symbol is null || options.DimValues.ContainsKey(symbol) || !values.ContainsKey(symbol)) continue;
            if (dims.Skip(2).Any(d => d is null)) continue;
            var perSample = dims.Skip(2).Aggregate(1L, (a, d) => a * d!.Value);
            if (perSample <= 0) continue;
            var need = (options.MinBatchNormValuesPerChannel + perSample - 1) / perSample;
            if (need > values[symbol]) values[symbol] = need;
        }
        return values;
    }

    private static Dictionary<string, long> UsedDimValues(IReadOnlyList<TensorSpec> inputs, Dictionary<string, long> values) =>
        inputs.SelectMany(i => i.Shape).Where(values.ContainsKey).Distinct(StringComparer.Ordinal).ToDictionary(d => d, d => values[d], StringComparer.Ordinal);

    private static GradientCheckReport Run(ModelProto training, ModelProto eval, TrainingGraphs graphs,
        List<(string Name, double[] Values, long[] Shape)> parameters, Dictionary<string, (Array Data, long[] Shape)> feeds,
        GradientCheckOptions options, Random rng, bool dbl)
    {
        using var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, IntraOpNumThreads = 1 };
        using var trainSession = new InferenceSession(OnnxModelWriter.ToBytes(training), so);
        using var evalSession = new InferenceSession(OnnxModelWriter.ToBytes(eval), so);
        var lossName = eval.Graph.Output[0].Name;

        OrtValue Param(double[] v, long[] shape) => dbl
            ? OrtValue.CreateTensorValueFromMemory(v.ToArray(), shape)
            : OrtValue.CreateTensorValueFromMemory(v.Select(x => (float)x).ToArray(), shape);

        List<(string, OrtValue)> BaseFeeds(InferenceSession s)
        {
            var names = s.InputNames.ToHashSet(StringComparer.Ordinal);
            var list = new List<(string, OrtValue)>();
            foreach (var (name, (data, shape)) in feeds)
                if (names.Contains(name)) list.Add((name, ToOrtValue(data, shape, dbl)));
            return list;
        }

        // Unperturbed parameters are wrapped once; a probe perturbs one element of one buffer and restores it.
        var paramBuffers = parameters.Select(p => dbl ? (Array)p.Values.ToArray() : p.Values.Select(x => (float)x).ToArray()).ToArray();
        var paramValues = parameters.Select((p, i) => paramBuffers[i] is double[] d
            ? OrtValue.CreateTensorValueFromMemory(d, p.Shape)
            : OrtValue.CreateTensorValueFromMemory((float[])paramBuffers[i], p.Shape)).ToArray();
        var evalFeeds = BaseFeeds(evalSession);
        evalFeeds.AddRange(parameters.Select((p, i) => (p.Name, paramValues[i])));
        var evalNames = evalFeeds.Select(x => x.Item1).ToArray();
        var evalValues = evalFeeds.Select(x => x.Item2).ToArray();
        using var runOptions = new RunOptions();

        double EvalLoss(int paramIndex, int element, double delta)
        {
            var buffer = paramBuffers[paramIndex];
            double original;
            if (buffer is double[] d) { original = d[element]; d[element] = original + delta; }
            else { var f = (float[])buffer; original = f[element]; f[element] = (float)(original + delta); }
            try
            {
                using var results = evalSession.Run(runOptions, evalNames, evalValues, [lossName]);
                return dbl ? results[0].GetTensorDataAsSpan<double>()[0] : results[0].GetTensorDataAsSpan<float>()[0];
            }
            finally
            {
                if (buffer is double[] d2) d2[element] = original; else ((float[])buffer)[element] = (float)original;
            }
        }

        // Analytic gradients.
        var tf = BaseFeeds(trainSession);
        foreach (var p in parameters) tf.Add((p.Name, Param(p.Values, p.Shape)));
        var outNames = new[] { training.Graph.Output[0].Name }.Concat(graphs.GradientOutputs).ToArray();
        double[][] analytic;
        double lossValue;
        try
        {
            using var results = trainSession.Run(new RunOptions(), tf.Select(x => x.Item1).ToArray(), tf.Select(x => x.Item2).ToArray(), outNames);
            lossValue = dbl ? results[0].GetTensorDataAsSpan<double>()[0] : results[0].GetTensorDataAsSpan<float>()[0];
            analytic = results.Skip(1).Select(r => dbl ? r.GetTensorDataAsSpan<double>().ToArray() : r.GetTensorDataAsSpan<float>().ToArray().Select(x => (double)x).ToArray()).ToArray();
        }
        finally { foreach (var (_, v) in tf) v.Dispose(); }

        var rtol = dbl ? 1e-5 : 3e-2;
        // The absolute floor scales with the gradients: the rounding noise of the finite differences goes through the
        // same sensitivities (a network whose gradients reach 500 has its loss's rounding error amplified alike).
        var scale = Math.Max(1, analytic.SelectMany(g => g).Where(double.IsFinite).Select(Math.Abs).DefaultIfEmpty(0).Max());
        var atol = (dbl ? 1e-7 : 2e-3) * scale;
        // Narrower steps tried when a difference misses: in float32 a step below h/10 is dominated by rounding.
        double[] refinements = dbl ? [10, 100] : [10];
        bool Within(double a, double numeric) => Math.Abs(a - numeric) <= atol + rtol * Math.Max(Math.Abs(a), Math.Abs(numeric));
        var checks = new List<ParameterGradientCheck>();
        for (var i = 0; i < parameters.Count; i++)
        {
            var n = parameters[i].Values.Length;
            var elements = n <= options.MaxElementsPerParameter
                ? Enumerable.Range(0, n).ToArray()
                : Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Take(options.MaxElementsPerParameter).ToArray();
            double maxRel = 0, maxAbs = 0;
            var passed = true;
            foreach (var e in elements)
            {
                var x = parameters[i].Values[e];
                var h = dbl ? 1e-6 * Math.Max(1, Math.Abs(x)) : 1e-2 * Math.Max(1, Math.Abs(x));
                var a = analytic[i][e];
                var numeric = (EvalLoss(i, e, h) - EvalLoss(i, e, -h)) / (2 * h);
                foreach (var r in refinements)
                {
                    if (Within(a, numeric)) break;
                    var narrow = (EvalLoss(i, e, h / r) - EvalLoss(i, e, -h / r)) / (2 * h / r);
                    // Keep the estimate closest to the analytic value: a wrong gradient misses them all.
                    if (Math.Abs(a - narrow) < Math.Abs(a - numeric)) numeric = narrow;
                }
                var abs = Math.Abs(a - numeric);
                var rel = abs / Math.Max(Math.Max(Math.Abs(a), Math.Abs(numeric)), atol / rtol);
                maxAbs = Math.Max(maxAbs, abs);
                maxRel = Math.Max(maxRel, rel);
                if (!Within(a, numeric) || double.IsNaN(a)) passed = false;
            }
            checks.Add(new ParameterGradientCheck(parameters[i].Name, maxRel, maxAbs, elements.Length, passed));
        }
        foreach (var v in evalValues) v.Dispose();
        return new GradientCheckReport(checks, dbl, rtol, options.Seed, lossValue) { AbsoluteTolerance = atol };
    }

    private static OrtValue ToOrtValue(Array data, long[] shape, bool dbl) => data switch
    {
        float[] f when dbl => OrtValue.CreateTensorValueFromMemory(f.Select(x => (double)x).ToArray(), shape),
        float[] f => OrtValue.CreateTensorValueFromMemory(f.ToArray(), shape),
        double[] d when dbl => OrtValue.CreateTensorValueFromMemory(d.ToArray(), shape),
        double[] d => OrtValue.CreateTensorValueFromMemory(d.Select(x => (float)x).ToArray(), shape),
        long[] l => OrtValue.CreateTensorValueFromMemory(l.ToArray(), shape),
        int[] i => OrtValue.CreateTensorValueFromMemory(i.ToArray(), shape),
        bool[] b => OrtValue.CreateTensorValueFromMemory(b.ToArray(), shape),
        _ => throw new OnnxTuneException($"Unsupported input array type {data.GetType().Name}."),
    };

    private static Dictionary<string, long[]> ForwardShapes(ModelProto model, Dictionary<string, (Array Data, long[] Shape)> feeds)
    {
        using var session = new InferenceSession(OnnxModelWriter.ToBytes(model));
        var names = feeds.Keys.Where(session.InputNames.Contains).ToArray();
        var values = names.Select(n => ToOrtValue(feeds[n].Data, feeds[n].Shape, false)).ToArray();
        try
        {
            using var results = session.Run(new RunOptions(), names, values, session.OutputNames);
            var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
            for (var i = 0; i < session.OutputNames.Count; i++)
                shapes[session.OutputNames[i]] = results[i].GetTensorTypeAndShape().Shape;
            return shapes;
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    private static (Array, long[]) RandomInput(ModelProto model, TensorSpec spec, Dictionary<string, long> dimValues, Random rng)
    {
        var shape = spec.Shape.Select(d => long.TryParse(d, out var v) ? v : dimValues[d]).ToArray();
        var n = (int)shape.Aggregate(1L, (a, b) => a * b);
        switch (spec.ElementType)
        {
            case "float" or "double":
                return (Enumerable.Range(0, n).Select(_ => (float)NextNormal(rng)).ToArray(), shape);
            case "int64":
                {
                    var name = spec.Name.ToLowerInvariant();
                    if (name.Contains("mask", StringComparison.Ordinal)) return (Enumerable.Repeat(1L, n).ToArray(), shape);
                    if (name.Contains("type", StringComparison.Ordinal)) return (new long[n], shape);
                    var bound = GatherBound(model, spec.Name) ?? 2;
                    return (Enumerable.Range(0, n).Select(_ => (long)rng.Next((int)Math.Min(bound, int.MaxValue))).ToArray(), shape);
                }
            case "bool":
                return (Enumerable.Range(0, n).Select(_ => true).ToArray(), shape);
            default:
                throw new OnnxTuneException($"Cannot make a random value for input '{spec.Name}' of type {spec.ElementType}; pass it explicitly.");
        }
    }

    // An int input used as Gather indices must stay below the gathered table's first dim.
    private static long? GatherBound(ModelProto model, string input)
    {
        foreach (var node in model.Graph.Node)
        {
            if (node.OpType != "Gather" || node.Input.Count < 2 || node.Input[1] != input) continue;
            var table = model.Graph.Initializer.FirstOrDefault(t => t.Name == node.Input[0]);
            if (table is not null) return table.Dims[(int)node.GetInt("axis", 0)];
        }
        return null;
    }

    private static (Array, long[]) RandomLabels(LossSpec loss, long[] outputShape, Random rng)
    {
        if (loss.Kind == LossKind.CrossEntropy)
        {
            var classes = outputShape[^1];
            var shape = outputShape[..^1];
            var n = (int)shape.Aggregate(1L, (a, b) => a * b);
            return (Enumerable.Range(0, n).Select(_ => (long)rng.Next((int)classes)).ToArray(), shape);
        }
        var m = (int)outputShape.Aggregate(1L, (a, b) => a * b);
        return loss.Kind == LossKind.BceWithLogits
            ? (Enumerable.Range(0, m).Select(_ => (float)rng.Next(2)).ToArray(), outputShape)
            : (Enumerable.Range(0, m).Select(_ => (float)NextNormal(rng)).ToArray(), outputShape);
    }

    private static double NextNormal(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
