using OnnxTune.Text.Batching;

namespace OnnxTune.Text.Tests;

public sealed class LengthBatchingTests
{
    private static int[] Lengths(int n, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => r.Next(2, 40)).ToArray();
    }

    [Theory]
    [InlineData(0, 4)]
    [InlineData(1, 4)]
    [InlineData(17, 4)]
    [InlineData(64, 8)]
    [InlineData(100, 1)]
    [InlineData(5, 32)]
    public void Every_example_lands_in_exactly_one_batch(int n, int batchSize)
    {
        var lengths = Lengths(n, n);
        foreach (int? seed in new int?[] { null, 1, 2 })
        {
            var batches = LengthBatching.CreateBatches(lengths, batchSize, seed);
            Assert.Equal((n + batchSize - 1) / batchSize, batches.Count);
            Assert.All(batches, b => Assert.InRange(b.Length, 1, batchSize));
            Assert.Equal(Enumerable.Range(0, n), batches.SelectMany(b => b).Order());
        }
    }

    [Fact]
    public void Without_seed_batches_are_shortest_first_with_ties_by_index()
    {
        int[] lengths = [5, 3, 5, 1, 3, 9, 1];
        var batches = LengthBatching.CreateBatches(lengths, 3);
        Assert.Equal([[3, 6, 1], [4, 0, 2], [5]], batches);
    }

    [Fact]
    public void Seeded_batches_hold_contiguous_length_ranges_in_shuffled_order()
    {
        var lengths = Lengths(200, 7);
        var a = LengthBatching.CreateBatches(lengths, 16, seed: 42);
        var b = LengthBatching.CreateBatches(lengths, 16, seed: 42);
        var c = LengthBatching.CreateBatches(lengths, 16, seed: 43);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        // Ranges of lengths of different batches overlap at most at their edges (sorted then cut).
        var ranges = a.Select(x => (Min: x.Min(i => lengths[i]), Max: x.Max(i => lengths[i]))).OrderBy(r => r.Min).ThenBy(r => r.Max).ToArray();
        for (var i = 1; i < ranges.Length; i++)
            Assert.True(ranges[i].Min >= ranges[i - 1].Max, $"{ranges[i - 1]} then {ranges[i]}");
        // Batch order is shuffled: not simply shortest-first.
        var firstMins = a.Select(x => x.Min(i => lengths[i])).ToArray();
        Assert.NotEqual(firstMins.Order(), firstMins);
    }

    [Fact]
    public void Bad_arguments_throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => LengthBatching.CreateBatches([1, 2], 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => LengthBatching.CreateBatches([1, -2], 2));
    }
}
