using System.Globalization;
using System.Text.RegularExpressions;
using Onnx;
using OnnxTune.Onnx.Tensors;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxTune.Text.Layers;

/// <summary>The block a parameter belongs to and how that was decided.</summary>
/// <param name="Parameter">The float initializer.</param>
/// <param name="Block"><c>embeddings</c>, <c>encoder.layer.&lt;i&gt;</c>, <c>pooler</c>, <c>head</c>, or null when unknown.</param>
/// <param name="Layer">The encoder layer index for <c>encoder.layer.&lt;i&gt;</c>, otherwise null.</param>
/// <param name="Via">Null when the name itself told; otherwise the named parameter found by following the graph.</param>
public sealed record LayerAssignment(string Parameter, string? Block, int? Layer, string? Via)
{
    /// <summary>
    /// For an unnamed weight placed via a bias (<c>….query.bias</c>), the name PyTorch gives it
    /// (<c>….query.weight</c>); otherwise null. Globs match it as well as <see cref="Parameter"/>.
    /// </summary>
    public string? InferredName => Via is { } v && v.EndsWith(".bias", StringComparison.Ordinal) ? v[..^".bias".Length] + ".weight" : null;
}

/// <summary>
/// Assigns every float initializer of a BERT-style encoder export (optionally with a task head) to a block:
/// <c>embeddings</c>, <c>encoder.layer.&lt;i&gt;</c>, <c>pooler</c> or <c>head</c>. Named parameters are placed by
/// their name (<c>encoder.layer.5.attention.self.query.bias</c>, also with a <c>bert.</c>-style prefix). Exporters
/// often lose the names of MatMul weights (<c>927</c>, <c>928</c>, …); those are placed by walking forward from the
/// weight through its consumers, breadth first and a few nodes deep, to the first named parameter they meet (the
/// MatMul's bias in the Add that follows), and take that parameter's block.
/// </summary>
public sealed partial class EncoderLayerMap
{
    /// <summary>Block of the token, position and type embeddings and their LayerNorm.</summary>
    public const string Embeddings = "embeddings";

    /// <summary>Block of the pooler (dense + tanh on the first token).</summary>
    public const string Pooler = "pooler";

    /// <summary>Block of a task head (<c>head.*</c>).</summary>
    public const string Head = "head";

    /// <summary>How many nodes away from a weight the walk looks for a named parameter.</summary>
    public const int MaxWalkDepth = 4;

    private readonly Dictionary<string, LayerAssignment> _byName;

    private EncoderLayerMap(IReadOnlyList<LayerAssignment> assignments)
    {
        Assignments = assignments;
        _byName = assignments.ToDictionary(a => a.Parameter, StringComparer.Ordinal);
        LayerCount = assignments.Where(a => a.Layer is not null).Select(a => a.Layer!.Value + 1).DefaultIfEmpty(0).Max();
    }

    /// <summary>Every float initializer, in graph order, with its block.</summary>
    public IReadOnlyList<LayerAssignment> Assignments { get; }

    /// <summary>Number of encoder layers (highest layer index + 1; 0 when none was found).</summary>
    public int LayerCount { get; }

    /// <summary>The block name of encoder layer <paramref name="index"/>.</summary>
    public static string LayerBlock(int index) => "encoder.layer." + index.ToString(CultureInfo.InvariantCulture);

    /// <summary>The assignment of a parameter.</summary>
    /// <exception cref="KeyNotFoundException">It is not a float initializer of the model.</exception>
    public LayerAssignment this[string parameter] => _byName[parameter];

    /// <summary>Parameters of one block, in graph order.</summary>
    public IReadOnlyList<string> ParametersOf(string block) =>
        Assignments.Where(a => a.Block == block).Select(a => a.Parameter).ToList();

    /// <summary>
    /// The parameters of the head plus the top <paramref name="layers"/> encoder layers (nothing else): with 6
    /// layers and <paramref name="layers"/> = 2, the head and <c>encoder.layer.4</c>, <c>encoder.layer.5</c>.
    /// </summary>
    /// <exception cref="LayerSelectionException">More layers are asked for than the encoder has, or the model has no head and 0 layers are asked for.</exception>
    public IReadOnlyList<string> HeadAndTopLayers(int layers)
    {
        if (layers < 0)
            throw new LayerSelectionException($"The number of trainable layers must be 0 or more (got {layers}).");
        if (layers > LayerCount)
            throw new LayerSelectionException($"{layers} trainable layers were asked for, but the encoder has {LayerCount} (encoder.layer.0 to encoder.layer.{LayerCount - 1}).");
        var blocks = new HashSet<string>(StringComparer.Ordinal) { Head };
        for (var i = LayerCount - layers; i < LayerCount; i++) blocks.Add(LayerBlock(i));
        var names = Assignments.Where(a => a.Block is not null && blocks.Contains(a.Block)).Select(a => a.Parameter).ToList();
        if (names.Count == 0)
            throw new LayerSelectionException("The model has no head parameters (head.*) and no encoder layer was selected: nothing would train.");
        return names;
    }

    /// <summary>
    /// Parameters whose name or <see cref="LayerAssignment.InferredName"/> matches a glob (<c>*</c>, <c>?</c>), so
    /// <c>encoder.layer.5.attention.*</c> also reaches the layer's unnamed attention matrices, while <c>*.bias</c>
    /// stays biases only.
    /// </summary>
    /// <exception cref="LayerSelectionException">The glob matches nothing.</exception>
    public IReadOnlyList<string> Match(string glob, string flag = "glob")
    {
        ArgumentNullException.ThrowIfNull(glob);
        var regex = new Regex("^" + Regex.Escape(glob).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$", RegexOptions.CultureInvariant);
        var hits = Assignments.Where(a => regex.IsMatch(a.Parameter) || (a.InferredName is { } n && regex.IsMatch(n))).Select(a => a.Parameter).ToList();
        if (hits.Count == 0)
            throw new LayerSelectionException($"{flag} '{glob}' matches no float initializer of the model (some names: {string.Join(", ", Assignments.Take(8).Select(a => a.Parameter))}{(Assignments.Count > 8 ? ", ..." : "")}).");
        return hits;
    }

    /// <summary>
    /// The trainable set: the head plus the top <paramref name="layers"/> encoder layers (none when null), plus
    /// every <paramref name="trainable"/> glob match, minus every <paramref name="frozen"/> glob match (see <see cref="Match"/>);
    /// with neither layers nor trainable globs, every parameter before the frozen ones are removed. Graph order.
    /// </summary>
    /// <exception cref="LayerSelectionException">A glob matches nothing, too many layers are asked for, or nothing is left.</exception>
    public IReadOnlyList<string> Select(int? layers, IEnumerable<string> trainable, IEnumerable<string> frozen)
    {
        ArgumentNullException.ThrowIfNull(trainable);
        ArgumentNullException.ThrowIfNull(frozen);
        var set = new HashSet<string>(StringComparer.Ordinal);
        var trainGlobs = trainable.ToList();
        if (layers is { } k) set.UnionWith(HeadAndTopLayers(k));
        else if (trainGlobs.Count == 0) set.UnionWith(Assignments.Select(a => a.Parameter));
        foreach (var g in trainGlobs) set.UnionWith(Match(g, "--trainable"));
        foreach (var g in frozen) set.ExceptWith(Match(g, "--frozen"));
        if (set.Count == 0)
            throw new LayerSelectionException("No trainable parameters are left after applying the layer, trainable and frozen selections.");
        return Assignments.Select(a => a.Parameter).Where(set.Contains).ToList();
    }

    /// <summary>Builds the map of a model.</summary>
    public static EncoderLayerMap Create(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var g = model.Graph;
        var floats = g.Initializer.Where(t => TensorProtos.IsFloating((DataType)t.DataType)).Select(t => t.Name).ToList();
        var named = new Dictionary<string, (string Block, int? Layer)>(StringComparer.Ordinal);
        foreach (var name in floats)
            if (FromName(name) is { } b) named[name] = b;

        var consumers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        foreach (var n in g.Node)
            foreach (var input in n.Input.Distinct())
            {
                if (input.Length == 0) continue;
                if (!consumers.TryGetValue(input, out var list)) consumers[input] = list = [];
                list.Add(n);
            }

        var result = new List<LayerAssignment>(floats.Count);
        foreach (var name in floats)
        {
            if (named.TryGetValue(name, out var own))
            {
                result.Add(new LayerAssignment(name, own.Block, own.Layer, null));
                continue;
            }
            var via = Walk(name, consumers, named);
            result.Add(via is null
                ? new LayerAssignment(name, null, null, null)
                : new LayerAssignment(name, named[via].Block, named[via].Layer, via));
        }
        return new EncoderLayerMap(result);
    }

    private static string? Walk(string start, Dictionary<string, List<NodeProto>> consumers, Dictionary<string, (string, int?)> named)
    {
        var frontier = new List<string> { start };
        var seen = new HashSet<string>(StringComparer.Ordinal) { start };
        for (var depth = 0; depth < MaxWalkDepth && frontier.Count > 0; depth++)
        {
            var next = new List<string>();
            foreach (var tensor in frontier)
            {
                if (!consumers.TryGetValue(tensor, out var nodes)) continue;
                foreach (var n in nodes)
                {
                    foreach (var input in n.Input)
                        if (input != start && named.ContainsKey(input))
                            return input;
                    foreach (var o in n.Output)
                        if (o.Length > 0 && seen.Add(o)) next.Add(o);
                }
            }
            frontier = next;
        }
        return null;
    }

    private static (string Block, int? Layer)? FromName(string name)
    {
        if (name.StartsWith("head.", StringComparison.Ordinal)) return (Head, null);
        var m = LayerName().Match(name);
        if (m.Success)
        {
            var i = int.Parse(m.Groups[1].ValueSpan, CultureInfo.InvariantCulture);
            return (LayerBlock(i), i);
        }
        if (EmbeddingsName().IsMatch(name)) return (Embeddings, null);
        if (PoolerName().IsMatch(name)) return (Pooler, null);
        return null;
    }

    [GeneratedRegex(@"(?:^|\.)(?:encoder\.)?layers?\.(\d+)\.", RegexOptions.CultureInvariant)]
    private static partial Regex LayerName();

    [GeneratedRegex(@"(?:^|\.)embeddings\.", RegexOptions.CultureInvariant)]
    private static partial Regex EmbeddingsName();

    [GeneratedRegex(@"(?:^|\.)pooler\.", RegexOptions.CultureInvariant)]
    private static partial Regex PoolerName();
}

/// <summary>A layer selection cannot be satisfied by the model.</summary>
public sealed class LayerSelectionException(string message) : OnnxTuneException(message);
