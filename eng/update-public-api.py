#!/usr/bin/env python3
"""Brings every library's PublicAPI.Unshipped.txt in line with its code.

Builds the solution with warnings as warnings, takes the PublicApiAnalyzers diagnostics (RS0016: a public
symbol missing from the baseline; RS0017: a listed symbol that no longer exists) and edits the files. Review the
diff: it is the change to the public API. Usage: python3 eng/update-public-api.py
"""
import collections, pathlib, re, subprocess, sys

root = pathlib.Path(__file__).resolve().parent.parent
diag = re.compile(r"warning (RS0016|RS0017): Symbol '(.+?)' is (?:not part of the declared public API|part of the declared API, but is either not public or could not be found).*\[(.+?\.csproj)")
for attempt in range(3):
    added, removed = collections.defaultdict(set), collections.defaultdict(set)
    out = subprocess.run(["dotnet", "build", str(root / "OnnxTune.sln"), "-v", "q", "-p:TreatWarningsAsErrors=false", "--no-incremental"],
                         capture_output=True, text=True).stdout
    for code, symbol, proj in diag.findall(out):
        (added if code == "RS0016" else removed)[pathlib.Path(proj).parent].add(symbol)
    if not added and not removed:
        print("public API files are up to date")
        sys.exit(0)
    for folder in set(added) | set(removed):
        path = folder / "PublicAPI.Unshipped.txt"
        lines = [l for l in path.read_text().splitlines() if l.strip()] if path.exists() else ["#nullable enable"]
        header = [l for l in lines if l.startswith("#")]
        body = {l for l in lines if not l.startswith("#")} - removed[folder] | added[folder]
        path.write_text("\n".join(header + sorted(body, key=lambda l: l.lstrip("~").replace("static ", "").replace("const ", "").replace("override ", "").replace("virtual ", "").replace("abstract ", ""))) + "\n")
        print(f"{path.relative_to(root)}: +{len(added[folder])} -{len(removed[folder])}")
print("still changing after 3 passes", file=sys.stderr)
sys.exit(1)
