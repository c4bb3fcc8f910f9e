using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace OnnxTune.Hosting.Tests.Hardening;

/// <summary>The wall clock jumps (a device whose clock is set by hand or by a bad NTP answer); the monotonic clock does not.</summary>
public sealed class ClockJumpTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Wall time = the fake clock plus <see cref="Jump"/>; timestamps and timers follow the fake clock only.</summary>
    private sealed class JumpingClock(FakeTimeProvider inner) : TimeProvider
    {
        public TimeSpan Jump { get; set; }

        public override DateTimeOffset GetUtcNow() => inner.GetUtcNow() + Jump;
        public override long GetTimestamp() => inner.GetTimestamp();
        public override long TimestampFrequency => inner.TimestampFrequency;
        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) => inner.CreateTimer(callback, state, dueTime, period);
    }

    [Fact]
    public async Task The_max_interval_trigger_follows_the_monotonic_clock_when_the_wall_clock_jumps_either_way()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 0, 0, 0, TimeSpan.Zero));
        var clock = new JumpingClock(time);
        await using var h = await Harness.StartAsync(_dir, new ScriptedRound(), o =>
        {
            o.MinNewFeedback = 100;
            o.MaxInterval = TimeSpan.FromMinutes(10);
            o.HeldOutShare = 0;
        }, time: time, clock: clock);
        await h.Service.StopAsync(default);
        await h.WriteFeedbackAsync(3, label: 1, seed: 1);
        clock.Jump = TimeSpan.FromDays(365);
        Assert.False(await h.Service.ShouldRunAsync(default)); // a year "passed" on the wall clock only
        clock.Jump = TimeSpan.FromDays(-365);
        time.Advance(TimeSpan.FromMinutes(11));
        Assert.True(await h.Service.ShouldRunAsync(default)); // 11 real minutes passed although the wall clock went back a year
        // The loop was stopped above: the health check says so.
        var health = await h.Host.Services.GetRequiredService<Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckService>().CheckHealthAsync();
        Assert.Equal(Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Unhealthy, health.Status);
        Assert.Contains("fine-tuning loop stopped", health.Entries["onnxtune"].Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_forward_jump_makes_retention_delete_only_trained_records()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 0, 0, 0, TimeSpan.Zero));
        var clock = new JumpingClock(time);
        var round = new ScriptedRound();
        await using var h = await Harness.StartAsync(_dir, round, o =>
        {
            o.FeedbackRetention = TimeSpan.FromDays(30);
            o.MinHeldOutImprovement = 0;
        }, time: time, clock: clock);
        await h.WriteFeedbackAsync(30, label: 2, seed: 2);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        round.Script.Enqueue(async (_, ct) =>
        {
            started.TrySetResult();
            await release.Task.WaitAsync(ct);
            return 2;
        });
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!started.Task.IsCompleted)
        {
            Assert.True(DateTime.UtcNow < deadline);
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.WhenAny(started.Task, Task.Delay(20));
        }
        // Accepted while the round trains (above its upTo), then the wall clock jumps ten years ahead.
        await h.WriteFeedbackAsync(5, label: 2, seed: 3);
        var latest = await h.Store.GetLatestSequenceAsync();
        clock.Jump = TimeSpan.FromDays(3650);
        var done = new TaskCompletionSource<RoundCompletedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Events.RoundCompleted += (_, e) => done.TrySetResult(e);
        release.SetResult();
        Assert.Equal(RoundOutcome.Promoted, (await done.Task.WaitAsync(TimeSpan.FromSeconds(30))).Outcome);

        // Every record is "older than 30 days" by the wall clock; only the 30 the round covered may go.
        var left = (await h.Store.GetTrainingSinceAsync(0, latest)).Concat(await h.Store.GetHeldOutAsync(latest)).Select(r => r.Sequence).Order().ToArray();
        Assert.Equal(Enumerable.Range(31, 5).Select(i => (long)i), left);
    }
}
