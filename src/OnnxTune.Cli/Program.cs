Console.WriteLine("onnxtune: coming up.");
