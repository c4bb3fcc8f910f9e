namespace OnnxTune.Training.Loops;

/// <summary>A train step's loss was NaN or infinite; the run stopped before applying that step's update.</summary>
public sealed class TrainingDivergedException : OnnxTuneException
{
    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(string message, int epoch, int batch, float loss) : base(message)
    {
        Epoch = epoch;
        Batch = batch;
        Loss = loss;
    }

    /// <summary>1-based epoch of the step.</summary>
    public int Epoch { get; }

    /// <summary>1-based batch of the step within its epoch.</summary>
    public int Batch { get; }

    /// <summary>The non-finite loss.</summary>
    public float Loss { get; }
}
