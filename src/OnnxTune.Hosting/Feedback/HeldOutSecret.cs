using System.Security.Cryptography;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// The per-store key of held-out assignment: 32 random bytes generated once, stored in the feedback store's state
/// table (key <see cref="StateKey"/>, created atomically so concurrent first writers agree), cached after the first
/// read. It never leaves the process through the hosting API: receipts carry only the resulting side.
/// </summary>
internal sealed class HeldOutSecret(IFeedbackStore store)
{
    internal const string StateKey = "held_out_secret";

    private byte[]? _secret;

    public async ValueTask<byte[]> GetAsync(CancellationToken ct)
    {
        if (Volatile.Read(ref _secret) is { } s) return s;
        // Concurrent first callers race benignly: the store keeps the first value written and all read it back.
        {
            var fresh = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
            string stored;
            if (store is IRoundLedger ledger) stored = await ledger.GetOrAddStateAsync(StateKey, fresh, ct).ConfigureAwait(false);
            else
            {
                stored = await store.GetStateAsync(StateKey, ct).ConfigureAwait(false) ?? "";
                if (stored.Length == 0)
                {
                    await store.SetStateAsync(StateKey, fresh, ct).ConfigureAwait(false);
                    stored = await store.GetStateAsync(StateKey, ct).ConfigureAwait(false) ?? fresh;
                }
            }
            var bytes = Convert.FromHexString(stored);
            if (bytes.Length < 16) throw new OnnxTuneException($"The feedback store's held-out secret (state '{StateKey}') is shorter than 16 bytes.");
            Volatile.Write(ref _secret, bytes);
            return bytes;
        }
    }
}
