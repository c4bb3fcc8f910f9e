#!/usr/bin/env bash
# Regenerates Generated/AdapterSchema.cs from adapter_schema.fbs (ONNX Runtime's .onnx_adapter schema).
# Needs flatc (Debian: apt-get install flatbuffers-compiler; generated with flatc 2.0.8). The generated code is then
# adapted to the maintained runtime library, Google.FlatBuffers 25.x (namespace Google.FlatBuffers, its version
# check), put in this folder's namespace and made internal (only OnnxAdapterFile uses it).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flatc --csharp --gen-onefile -o "$tmp" adapter_schema.fbs
mkdir -p Generated
sed -e 's/global::FlatBuffers;/global::Google.FlatBuffers;/' \
    -e 's/FlatBufferConstants\.FLATBUFFERS_[0-9_]*()/FlatBufferConstants.FLATBUFFERS_25_2_10()/' \
    -e 's/onnxruntime\.adapters\./OnnxTune.Training.Adapters.Generated./g' \
    -e 's/^namespace onnxruntime\.adapters$/namespace OnnxTune.Training.Adapters.Generated/' \
    -e 's/^public enum /internal enum /' -e 's/^public struct /internal struct /' \
    "$tmp/adapter_schema_generated.cs" > Generated/AdapterSchema.cs
echo "wrote Generated/AdapterSchema.cs ($(flatc --version))"
