Console.WriteLine("OnnxTune demo: coming up.");
