using Microsoft.ML.OnnxRuntime;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// The serving session, swappable while requests run. Readers take a reference-counted lease with a
/// compare-and-swap (no lock); a swap publishes the new entry with <see cref="Interlocked.Exchange{T}(ref T, T)"/>
/// and drops the store's own reference to the old one, which is disposed when its last lease is released.
/// </summary>
internal sealed class SwappableInferenceSession : IDisposable
{
    private Entry? _current;

    /// <summary>Gets the entry now serving, or null.</summary>
    public Entry? Current => Volatile.Read(ref _current);

    /// <summary>Leases the serving session; dispose the lease exactly once.</summary>
    /// <exception cref="ModelNotServingException">No session was published yet, or the handle was disposed.</exception>
    public Lease Acquire()
    {
        while (true)
        {
            var entry = Volatile.Read(ref _current) ?? throw new ModelNotServingException("No model session is loaded.");
            if (entry.TryAddRef()) return new Lease(entry);
            // The entry was retired and drained between the read and the add-ref; the next read sees its successor.
        }
    }

    /// <summary>Publishes <paramref name="next"/> and retires the previous entry; returns the previous entry.</summary>
    public Entry? Publish(Entry next)
    {
        ArgumentNullException.ThrowIfNull(next);
        var previous = Interlocked.Exchange(ref _current, next);
        previous?.Release();
        return previous;
    }

    /// <summary>Retires the serving entry; its session is disposed once in-flight leases finish.</summary>
    public void Dispose() => Interlocked.Exchange(ref _current, null)?.Release();

    /// <summary>A session plus its reference count; starts with one reference held by the publisher.</summary>
    internal sealed class Entry(InferenceSession session, ModelVersionInfo? version, string modelPath)
    {
        private readonly TaskCompletionSource _disposed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _refs = 1;

        public InferenceSession Session { get; } = session;
        public ModelVersionInfo? Version { get; } = version;
        public string ModelPath { get; } = modelPath;

        /// <summary>Completes after the session was disposed.</summary>
        public Task Disposed => _disposed.Task;

        internal int References => Volatile.Read(ref _refs);

        public bool TryAddRef()
        {
            var r = Volatile.Read(ref _refs);
            while (r > 0)
            {
                var seen = Interlocked.CompareExchange(ref _refs, r + 1, r);
                if (seen == r) return true;
                r = seen;
            }
            return false;
        }

        public void Release()
        {
            var r = Interlocked.Decrement(ref _refs);
            if (r == 0)
                // Dispose off the caller's thread: the last lease is often released on a request thread.
                ThreadPool.UnsafeQueueUserWorkItem(static e => e.DisposeNow(), this, preferLocal: false);
            else if (r < 0)
                throw new InvalidOperationException("A session lease was released twice.");
        }

        private void DisposeNow()
        {
            try { Session.Dispose(); _disposed.TrySetResult(); }
            catch (Exception e) { _disposed.TrySetException(e); }
        }
    }

    /// <summary>A leased session; the session stays alive until the lease is disposed.</summary>
    internal readonly struct Lease(Entry entry) : IDisposable
    {
        public InferenceSession Session => entry.Session;
        public Entry Entry => entry;
        public void Dispose() => entry?.Release();
    }
}
