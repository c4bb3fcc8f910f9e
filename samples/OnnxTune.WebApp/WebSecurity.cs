using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.Extensions.Options;

namespace OnnxTune.WebApp;

/// <summary>
/// Who may call what. Users: a demo sign-in (<c>POST /signin</c>) issues a cookie holding a server-generated user id;
/// every feedback record is attributed to that id, never to one from the request. Admins: an API key from
/// configuration (<c>Admin:ApiKeys</c>) in the <c>X-Api-Key</c> header; with no key configured, admin endpoints refuse
/// everyone. Rate limits per user (or per IP before sign-in), a body-size cap, and errors as generic ProblemDetails.
/// </summary>
public static class WebSecurity
{
    public const string UserPolicy = "user";
    public const string AdminPolicy = "admin";
    public const string ApiKeyScheme = "ApiKey";
    public const string ApiKeyHeader = "X-Api-Key";
    public const string PredictLimit = "predict";
    public const string FeedbackLimit = "feedback";
    public const string SignInLimit = "signin";

    public static void AddWebSecurity(this WebApplicationBuilder builder, WebAppSettings settings, string keysDirectory)
    {
        var services = builder.Services;

        // Users: a cookie (HttpOnly, SameSite=Strict, so other sites cannot send it) protected by ASP.NET Data Protection.
        services.AddDataProtection().PersistKeysToFileSystem(new DirectoryInfo(keysDirectory)).SetApplicationName("OnnxTune.WebApp");
        services.AddAuthentication(CookieAuthenticationDefaults.AuthenticationScheme)
            .AddCookie(o =>
            {
                o.Cookie.Name = "onnxtune-user";
                o.Cookie.HttpOnly = true;
                o.Cookie.SameSite = SameSiteMode.Strict;
                o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest; // an app behind TLS sets Always
                o.ExpireTimeSpan = TimeSpan.FromDays(7);
                o.SlidingExpiration = true;
                // An API answers 401/403 instead of redirecting to a login page.
                o.Events.OnRedirectToLogin = c => { c.Response.StatusCode = StatusCodes.Status401Unauthorized; return Task.CompletedTask; };
                o.Events.OnRedirectToAccessDenied = c => { c.Response.StatusCode = StatusCodes.Status403Forbidden; return Task.CompletedTask; };
            })
            .AddScheme<AuthenticationSchemeOptions, ApiKeyHandler>(ApiKeyScheme, _ => { });
        services.AddAuthorizationBuilder()
            .AddPolicy(UserPolicy, p => p.AddAuthenticationSchemes(CookieAuthenticationDefaults.AuthenticationScheme)
                .RequireAuthenticatedUser().RequireClaim(ClaimTypes.NameIdentifier))
            .AddPolicy(AdminPolicy, p => p.AddAuthenticationSchemes(ApiKeyScheme).RequireRole("admin"));

        // Rate limits: per signed-in user, else per client IP; a global per-IP ceiling over all endpoints.
        var limits = settings.RateLimits;
        services.AddRateLimiter(o =>
        {
            o.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            o.OnRejected = (context, ct) => new ValueTask(WriteProblemAsync(context.HttpContext, StatusCodes.Status429TooManyRequests, "Too many requests; try again later."));
            o.AddPolicy(PredictLimit, c => PerMinute("predict:" + UserOrIp(c), limits.PredictPerMinute));
            o.AddPolicy(FeedbackLimit, c => PerMinute("feedback:" + UserOrIp(c), limits.FeedbackPerMinute));
            o.AddPolicy(SignInLimit, c => PerMinute("signin:" + Ip(c), limits.SignInPerMinute));
            o.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(c => PerMinute("ip:" + Ip(c), limits.PerIpPerMinute));
        });

        // Bodies: every endpoint takes a small JSON object; Kestrel refuses larger bodies with 413 (chunked ones too).
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = settings.MaxBodyBytes);
        services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = false); // bad JSON: a plain 400, in Development too
        services.AddProblemDetails();
    }

    /// <summary>Error handling and headers, outermost first.</summary>
    public static void UseWebSecurity(this WebApplication app)
    {
        // Any exception: logged with details, answered with a generic ProblemDetails (no message, type or path).
        app.UseExceptionHandler(new ExceptionHandlerOptions
        {
            ExceptionHandler = context =>
            {
                var error = context.Features.Get<IExceptionHandlerFeature>()?.Error;
                var status = error is BadHttpRequestException bad ? bad.StatusCode : StatusCodes.Status500InternalServerError;
                app.Logger.LogError(error, "Request {Method} {Path} failed with {Status}", context.Request.Method, context.Request.Path, status);
                return WriteProblemAsync(context, status, status == StatusCodes.Status413PayloadTooLarge ? "The request body is too large." : status < 500 ? "The request is not valid." : "The request failed; the error is in the server log.");
            },
        });
        // Bare 4xx answers (401, 403, 404, 405, 415, ...) get a ProblemDetails body too.
        app.UseStatusCodePages(context => WriteProblemAsync(context.HttpContext, context.HttpContext.Response.StatusCode, null));
        app.Use((context, next) =>
        {
            var h = context.Response.Headers;
            h["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";
            h["X-Content-Type-Options"] = "nosniff";
            h["Referrer-Policy"] = "no-referrer";
            h["Cache-Control"] = "no-store";
            return next(context);
        });
    }

    /// <summary>The caller's user id: the cookie's NameIdentifier claim (the endpoints that read it require the user policy).</summary>
    public static string UserId(this ClaimsPrincipal user) =>
        user.FindFirstValue(ClaimTypes.NameIdentifier) ?? throw new InvalidOperationException("No user id claim.");

    /// <summary>A new user id, generated by the server (never chosen by the caller).</summary>
    public static string NewUserId() => "u-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));

    public static Task WriteProblemAsync(HttpContext context, int status, string? detail)
    {
        if (context.Response.HasStarted) return Task.CompletedTask;
        context.Response.StatusCode = status;
        return context.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails = { Status = status, Detail = detail },
        }).AsTask();
    }

    private static RateLimitPartition<string> PerMinute(string key, int permits) =>
        RateLimitPartition.GetFixedWindowLimiter(key, _ => new FixedWindowRateLimiterOptions
        {
            PermitLimit = permits,
            Window = TimeSpan.FromMinutes(1),
            QueueLimit = 0,
        });

    private static string UserOrIp(HttpContext c) => c.User.FindFirstValue(ClaimTypes.NameIdentifier) is { } id ? "user:" + id : "ip:" + Ip(c);

    private static string Ip(HttpContext c) => c.Connection.RemoteIpAddress?.ToString() ?? "unknown";
}

/// <summary>
/// Admin authentication: <c>X-Api-Key</c> must equal one of the configured <c>Admin:ApiKeys</c> (at least 16
/// characters; compared as SHA-256 hashes in fixed time). No key configured: nobody is an admin.
/// </summary>
public sealed class ApiKeyHandler : AuthenticationHandler<AuthenticationSchemeOptions>
{
    private readonly byte[][] _keyHashes;

    public ApiKeyHandler(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder, IConfiguration configuration)
        : base(options, logger, encoder)
    {
        var keys = configuration.GetSection("Admin:ApiKeys").Get<string[]>() ?? [];
        _keyHashes = keys.Where(k => k.Trim().Length >= 16).Select(k => SHA256.HashData(Encoding.UTF8.GetBytes(k.Trim()))).ToArray();
    }

    public static int ConfiguredKeyCount(IConfiguration configuration) =>
        (configuration.GetSection("Admin:ApiKeys").Get<string[]>() ?? []).Count(k => k.Trim().Length >= 16);

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (_keyHashes.Length == 0 || !Request.Headers.TryGetValue(WebSecurity.ApiKeyHeader, out var values) || values.Count != 1 || string.IsNullOrEmpty(values[0]))
            return Task.FromResult(AuthenticateResult.NoResult());
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(values[0]!));
        var match = false;
        foreach (var key in _keyHashes) match |= CryptographicOperations.FixedTimeEquals(hash, key);
        if (!match) return Task.FromResult(AuthenticateResult.Fail("invalid API key"));
        var identity = new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, "admin"), new Claim(ClaimTypes.Role, "admin")], Scheme.Name);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), Scheme.Name)));
    }
}
