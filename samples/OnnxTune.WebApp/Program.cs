using OnnxTune.WebApp;

// OnnxTune web sample: an intent API whose model — all-MiniLM-L6-v2 with a classification head — keeps improving
// from its users' corrections. IntentWebApp.cs has the model and the endpoints, WebSecurity.cs who may call what.
//   dotnet run --project samples/OnnxTune.WebApp -- --urls http://127.0.0.1:5080
//   (admin endpoints need a key: --Admin:ApiKeys:0=<at least 16 characters>, or the Admin__ApiKeys__0 environment variable)
var app = IntentWebApp.Build(new WebApplicationOptions { Args = args });
await app.RunAsync();
