#!/usr/bin/env bash
# Issue 5 benchmark: builds Release, then runs OnnxTune, TorchSharp and PyTorch+OpenBLAS on W1–W3 one after the
# other (never concurrently; per workload: OnnxTune, TorchSharp, PyTorch) plus the ONNX Runtime SGEMM ceiling, and
# prints one table. All three start from the same initial weights and batch (TorchSharp --dump-init).
#
# usage: benchmarks/run.sh [--workloads W1,W2,W3] [--repeat N] [--steps N] [--warmup N] [--serving] [--memory] [--w4] [--w4-quick] [--w5] [--all] [--out DIR]
#   --repeat N        N rounds of (per workload: OnnxTune, TorchSharp, PyTorch), default 3; the table reports the median
#                     of the rounds' medians, so a noisy minute on a shared machine does not decide a ratio
#   --steps/--warmup  override the spec (smoke runs only)
#   --serving         also run OnnxTune.Benchmarks.Serving (p50/p99 idle, under training, across swaps)
#   --memory          also run 1000 small rounds (OnnxTune.Benchmarks --memory-rounds 1000)
#   --w4              issue 14 W4: MiniLM top 2 layers + head on CLINC150 (15,000 utterances, 3 epochs), OnnxTune,
#                     TorchSharp and PyTorch one after another (~15-20 minutes on a quiet 2-core machine, estimated)
#   --w4-quick        W4 on 1,500 utterances, 1 epoch, 1,000 test utterances (a correctness check, 1-2 minutes)
#   --w5              issue 14 W5: 3 hosted rounds of 400 text records + replay (trigger to swap); the shipped model
#                     is trained once into artifacts/bench-w5 and reused
#   --all             --serving, --memory, --w4 and --w5
#   Given only --w4/--w4-quick/--w5 (no --workloads, --serving, --memory, --all), W1-W3 are skipped.
#   --out DIR         keep the raw JSON lines in DIR (default: a temp folder, printed at the end)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

workloads=W1,W2,W3 serving=0 memory=0 out="" extra=() repeat=3
w4="" w5=0 all=0 explicit=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workloads) workloads="$2"; explicit=1; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    --steps|--warmup) extra+=("$1" "$2"); shift 2 ;;
    --serving) serving=1; shift ;;
    --memory) memory=1; shift ;;
    --all) serving=1; memory=1; all=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --w4) w4=full; shift ;;
    --w4-quick) w4=quick; shift ;;
    --w5) w5=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [[ $all == 1 ]]; then w4="${w4:-full}"; w5=1; fi
# Only the issue-14 benchmarks were asked for: skip W1-W3 (and their peers' initial weights and the SGEMM ceiling).
training=1
if [[ ( -n $w4 || $w5 == 1 ) && $all == 0 && $explicit == 0 && $serving == 0 && $memory == 0 ]]; then training=0; fi
out="${out:-$(mktemp -d -t onnxtune-bench-XXXXXX)}"
mkdir -p "$out/init"
results="$out/results.jsonl"
: > "$results"

echo "== building Release" >&2
for p in OnnxTune.Benchmarks OnnxTune.Benchmarks.TorchSharp OnnxTune.Benchmarks.Serving; do
  dotnet build "$here/$p/$p.csproj" -c Release -nologo -v q > "$out/build-$p.log" 2>&1 || { cat "$out/build-$p.log" >&2; exit 1; }
done
bin() { echo "$here/$1/bin/Release/net10.0/$1"; }
onnxtune="$(bin OnnxTune.Benchmarks)"
torchsharp="$(bin OnnxTune.Benchmarks.TorchSharp)"

load() { printf '{"mode":"load","at":"%s","phase":"%s","loadavg":"%s"}\n' "$(date -u +%FT%TZ)" "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$results"; }
{
  printf '{"mode":"machine","cpu":"%s","cores":%s,"kernel":"%s"}\n' \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$(nproc)" "$(uname -r)"
} >> "$results"

# ---- issue 14: W4 (fine-tuning MiniLM, three systems) and W5 (hosted rounds) ---------------------------------------
encoder="$(bin OnnxTune.Benchmarks.Encoder)"
build_encoder() {
  dotnet build "$here/OnnxTune.Benchmarks.Encoder/OnnxTune.Benchmarks.Encoder.csproj" -c Release -nologo -v q > "$out/build-encoder.log" 2>&1 \
    || { cat "$out/build-encoder.log" >&2; exit 1; }
}
run_w4() {  # $1: full | quick
  local dir="$out/w4" limits=()
  if [[ $1 == quick ]]; then limits=(--train-limit 1500 --test-limit 1000 --epochs 1); fi
  echo "== W4 ($1): shared model, token ids and batch plan" >&2
  "$encoder" prepare --work "$dir" "${limits[@]}" 2>&1 | sed 's/^/   /' >&2
  echo "== W4: OnnxTune" >&2
  load w4-onnxtune
  "$encoder" w4 --work "$dir" | tee -a "$results" >&2
  echo "== W4: TorchSharp" >&2
  load w4-torchsharp
  "$torchsharp" --w4 --work "$dir" | tee -a "$results" >&2
  echo "== W4: PyTorch" >&2
  load w4-pytorch
  "$here/pytorch/run.sh" --w4 --work "$dir" | tee -a "$results" >&2
}
run_w5() {
  echo "== W5: 3 hosted rounds of 400 text records + replay" >&2
  load w5
  "$encoder" w5 --work "$root/artifacts/bench-w5" --rounds 3 --records 400 | tee -a "$results" >&2
}
# ----------------------------------------------------------------------------------------------------------------------

if [[ $training == 1 ]]; then
echo "== initial weights (TorchSharp --dump-init)" >&2
"$torchsharp" --workloads "$workloads" --dump-init "$out/init" 2>&1 >/dev/null | sed 's/^/   /' >&2

echo "== SGEMM ceiling through ONNX Runtime" >&2
load sgemm
"$onnxtune" --sgemm --workloads "$workloads" | tee -a "$results" >&2

[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --repeat expects a positive integer" >&2; exit 2; }
for round in $(seq 1 "$repeat"); do
  for w in ${workloads//,/ }; do
    echo "== $w (round $round of $repeat)" >&2
    load "$w"
    "$onnxtune" --workloads "$w" --init "$out/init" "${extra[@]}" | tee -a "$results" >&2
    "$torchsharp" --workloads "$w" "${extra[@]}" | tee -a "$results" >&2
    "$here/pytorch/run.sh" --workloads "$w" --init "$out/init" "${extra[@]}" | tee -a "$results" >&2
  done
done
load end
fi

if [[ $serving == 1 ]]; then
  echo "== serving under training" >&2
  load serving
  "$(bin OnnxTune.Benchmarks.Serving)" | tee -a "$results" >&2
  # The same with the serving session held to one thread (cores − TrainingThreads on a 2-core machine), and with
  # two (more threads than the cores training leaves: the trainer's lower priority has to hold the tail).
  "$(bin OnnxTune.Benchmarks.Serving)" --inference-threads 1 | tee -a "$results" >&2
  "$(bin OnnxTune.Benchmarks.Serving)" --inference-threads 2 | tee -a "$results" >&2
fi
if [[ $memory == 1 ]]; then
  echo "== memory: 1000 rounds" >&2
  load memory
  "$onnxtune" --memory-rounds 1000 | tee -a "$results" >&2
fi

if [[ -n $w4 || $w5 == 1 ]]; then
  build_encoder
  if [[ -n $w4 ]]; then run_w4 "$w4"; fi
  if [[ $w5 == 1 ]]; then run_w5; fi
fi

python3 "$here/report.py" "$results"
echo "raw results: $results" >&2
