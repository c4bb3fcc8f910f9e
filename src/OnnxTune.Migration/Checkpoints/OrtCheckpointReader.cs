namespace OnnxTune.Migration.Checkpoints;

/// <summary>Reads an ONNX Runtime training checkpoint in either format ORT wrote.</summary>
public static class OrtCheckpointReader
{
    /// <summary>Reads the flatbuffer file (identifier <c>ODTC</c>) or the directory of <c>.pbseq</c> files at <paramref name="path"/>.</summary>
    /// <exception cref="OrtImportException">Missing, unrecognised, nominal, external-data or non-float checkpoints.</exception>
    public static OrtCheckpoint Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (File.Exists(path))
            return OrtFlatbufferCheckpoint.Read(path);
        if (OrtPbseqCheckpoint.IsPbseqDirectory(path))
            return OrtPbseqCheckpoint.Read(path);
        if (Directory.Exists(path))
        {
            // ORT 1.16+ writes a file named 'checkpoint'; some apps pass its folder.
            var inner = Directory.EnumerateFiles(path).FirstOrDefault(OrtFlatbufferCheckpoint.HasIdentifier);
            if (inner is not null) return OrtFlatbufferCheckpoint.Read(inner);
            throw new OrtImportException(OrtImportErrorKind.UnrecognizedCheckpoint, path,
                $"'{path}' is a directory with neither .pbseq files (ORT 1.14–1.15 checkpoints) nor a flatbuffer checkpoint file (identifier '{OrtFlatbufferCheckpoint.FileIdentifier}').");
        }
        throw new OrtImportException(OrtImportErrorKind.MissingFile, path, $"Checkpoint '{path}' does not exist.");
    }
}
