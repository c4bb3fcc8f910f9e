Console.WriteLine("OnnxTune benchmarks: coming up.");
