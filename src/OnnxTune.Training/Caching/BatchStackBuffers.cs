namespace OnnxTune.Training.Caching;

/// <summary>
/// One growable buffer per stacked tensor name, reused from batch to batch: a training loop that finishes each step
/// before asking for the next batch then stacks cached activations without allocating (a batch of MiniLM hidden
/// states is megabytes, which as fresh arrays every step piled up as large-object garbage between collections).
/// A batch stacked into these buffers is valid only until the next one is stacked.
/// </summary>
internal sealed class BatchStackBuffers
{
    private readonly Dictionary<(string Name, Type Type), Array> _buffers = [];

    /// <summary>A buffer of exactly <paramref name="length"/> elements for <paramref name="name"/> (contents undefined).</summary>
    public Memory<T> Rent<T>(string name, int length) where T : unmanaged
    {
        var key = (name, typeof(T));
        if (!_buffers.TryGetValue(key, out var array) || array.Length < length)
            _buffers[key] = array = new T[length];
        return new Memory<T>((T[])array, 0, length);
    }
}
