using OnnxTune.Onnx.ModelIO;

namespace OnnxTune.Onnx.Tests;

public sealed class ExceptionTests
{
    [Fact]
    public void Format_and_unsupported_model_exceptions_derive_from_OnnxTuneException_and_keep_message_and_inner()
    {
        var inner = new IOException("disk");
        var format = new OnnxModelFormatException("bad 'model.onnx'", inner);
        var unsupported = new UnsupportedModelException("opset 11 in 'm.onnx'");
        var baseWithInner = new OnnxTuneException("x", inner);

        Assert.IsAssignableFrom<OnnxTuneException>(format);
        Assert.IsAssignableFrom<OnnxTuneException>(unsupported);
        Assert.Equal("bad 'model.onnx'", format.Message);
        Assert.Same(inner, format.InnerException);
        Assert.Null(new OnnxModelFormatException("m").InnerException);
        Assert.Equal("opset 11 in 'm.onnx'", unsupported.Message);
        Assert.Same(inner, baseWithInner.InnerException);
    }

    [Fact]
    public void A_catch_of_OnnxTuneException_catches_reader_errors()
    {
        // Callers are promised one base type for every deliberate error: the reader's errors must be catchable by it.
        OnnxTuneException? caught = null;
        try { OnnxModelReader.Parse([0xFF, 0xFF, 0xFF], "junk.onnx"); }
        catch (OnnxTuneException e) { caught = e; }

        Assert.IsType<OnnxModelFormatException>(caught);
        Assert.Contains("junk.onnx", caught!.Message);
    }
}
