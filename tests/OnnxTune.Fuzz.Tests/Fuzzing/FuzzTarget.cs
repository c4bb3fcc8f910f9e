namespace OnnxTune.Fuzz.Tests.Fuzzing;

/// <summary>One mutated case: the files to write into the case folder and what was done to the seed.</summary>
internal sealed record FuzzInput(IReadOnlyDictionary<string, byte[]> Files)
{
    /// <summary>Extra in-memory text for targets that parse strings (database columns).</summary>
    public string? Text { get; init; }
}

/// <summary>A parser under fuzz: builds its valid seeds once, mutates them per case, and parses the result.</summary>
internal abstract class FuzzTarget
{
    public abstract string Name { get; }

    /// <summary>Builds the seeds; <paramref name="workDirectory"/> is private to this target and lives for the run.</summary>
    public abstract void Setup(string workDirectory);

    /// <summary>A mutated case (all randomness from <paramref name="m"/>).</summary>
    public abstract FuzzInput Generate(Mutator m);

    /// <summary>Parses the case (its files are already written to <paramref name="caseDirectory"/>).</summary>
    public abstract void Parse(FuzzInput input, string caseDirectory);

    /// <summary>The folder files are written to (default: a fresh per-target case folder).</summary>
    public virtual string? FixedCaseDirectory => null;
}
