using OnnxTune.Cli;

return OnnxTuneCli.Run(args, CliContext.FromConsole());
