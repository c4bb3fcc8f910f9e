using System.Diagnostics;
using OnnxTune.Benchmarks.Workloads;
using OnnxTune.Training;

namespace OnnxTune.Benchmarks;

/// <summary>
/// N consecutive small fine-tuning rounds as the hosted service runs them: open a TrainingEngine on the W1 head
/// artifacts, a few train + optimizer steps, save a checkpoint, export the inference model, dispose. RSS is sampled
/// every 100 rounds; steady state is the RSS slope over the second half of the rounds.
/// </summary>
internal static class MemoryRounds
{
    private const int StepsPerRound = 4;

    public static void Run(int rounds, Action<object> print)
    {
        var root = Path.Combine(Path.GetTempPath(), $"onnxtune-bench-memory-{Environment.ProcessId}");
        try
        {
            var artifacts = Path.Combine(root, "artifacts");
            TrainBenchmark.BuildArtifacts(WorkloadSpec.W1, artifacts);
            var rng = new Random(WorkloadSpec.Seed);
            var batchSize = WorkloadSpec.W1.Batch;
            var input = Enumerable.Range(0, batchSize * WorkloadSpec.Hidden).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            var labels = Enumerable.Range(0, batchSize).Select(_ => (long)rng.Next(WorkloadSpec.Classes)).ToArray();
            var batch = new TrainingBatch().Add("input", input, batchSize, WorkloadSpec.Hidden).WithLabels(labels, batchSize);
            var checkpoint = Path.Combine(root, "checkpoint");
            var model = Path.Combine(root, "model.onnx");

            ProcessMemory.ResetPeak();
            var samples = new List<(int Round, double RssMb, double ManagedMb)>();
            var start = Stopwatch.GetTimestamp();
            float loss = 0;
            for (var round = 1; round <= rounds; round++)
            {
                using (var session = TrainingEngine.Open(artifacts, new TrainingEngineOptions
                {
                    IntraOpThreads = 1,
                    InterOpThreads = 1,
                    CheckpointDirectory = round > 1 ? checkpoint : null,
                }))
                {
                    for (var s = 0; s < StepsPerRound; s++)
                    {
                        loss = session.TrainStep(batch);
                        session.OptimizerStep();
                    }
                    session.SaveCheckpoint(checkpoint);
                    session.ExportInferenceModel(model);
                }
                if (round % 100 == 0 || round == rounds)
                {
                    // Managed memory is measured after a full collection; RSS is what the OS sees (native ORT heaps too).
                    var managed = GC.GetTotalMemory(forceFullCollection: true) / 1048576.0;
                    var rss = ProcessMemory.RssMb();
                    samples.Add((round, rss, managed));
                    print(new { Mode = "memory", Round = round, RssMb = Math.Round(rss, 1), ManagedMb = Math.Round(managed, 2), Loss = loss });
                }
            }
            var first = samples[0];
            var last = samples[^1];
            // Steady state: the least-squares slope of RSS over the second half of the rounds (allocator warm-up,
            // e.g. glibc arenas filling, happens in the first few hundred rounds and is not growth).
            var steady = samples.Where(x => x.Round > rounds / 2).ToArray();
            double slopePer1000 = 0;
            if (steady.Length > 1)
            {
                double mx = steady.Average(x => x.Round), my = steady.Average(x => x.RssMb);
                slopePer1000 = 1000 * steady.Sum(x => (x.Round - mx) * (x.RssMb - my)) / steady.Sum(x => (x.Round - mx) * (x.Round - mx));
            }
            print(new
            {
                Mode = "memory-summary",
                Rounds = rounds,
                StepsPerRound,
                SecondsPerRound = Math.Round(Stopwatch.GetElapsedTime(start).TotalSeconds / rounds, 4),
                PeakRssMb = Math.Round(ProcessMemory.PeakRssMb(), 1),
                FirstSampleRound = first.Round,
                FirstSampleRssMb = Math.Round(first.RssMb, 1),
                LastRssMb = Math.Round(last.RssMb, 1),
                MaxRssAfterFirstSampleMb = Math.Round(samples.Max(x => x.RssMb), 1),
                RssGrowthMb = Math.Round(last.RssMb - first.RssMb, 1),
                ManagedGrowthMb = Math.Round(last.ManagedMb - first.ManagedMb, 2),
                SteadyRssSlopeMbPer1000Rounds = Math.Round(slopePer1000, 2),
            });
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }
}
