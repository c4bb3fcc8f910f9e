#!/usr/bin/env python3
"""Interleaved A/B runs of OnnxTune.Benchmarks variants (issue 14): on a shared machine only ratios between
variants measured side by side mean anything. Each round runs every variant once per workload, in a fresh process,
in rotating order; the summary is the median over rounds of each variant's median step (and train-graph run), its
ratio to the first variant, CPU time per step (all threads: the work done, which the neighbours move far less than
wall time) and peak RSS (max over rounds).

usage: benchmarks/ab.py --variants default,weight-grad-gemm [--workloads W2,W3] [--rounds 5] [--steps N] [--warmup N]
                        [--graph operators|decomposed] [--out FILE.jsonl]
Run `dotnet build benchmarks/OnnxTune.Benchmarks -c Release` first.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
binary = os.path.join(here, "OnnxTune.Benchmarks", "bin", "Release", "net10.0", "OnnxTune.Benchmarks")

p = argparse.ArgumentParser()
p.add_argument("--variants", required=True)
p.add_argument("--workloads", default="W2,W3")
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--steps", type=int)
p.add_argument("--warmup", type=int)
p.add_argument("--graph")
p.add_argument("--out")
a = p.parse_args()
variants = a.variants.split(",")
workloads = a.workloads.split(",")
if not os.path.exists(binary):
    sys.exit(f"ab.py: {binary} is missing; build benchmarks/OnnxTune.Benchmarks in Release first")

rows = []
out = open(a.out, "w") if a.out else None
for r in range(a.rounds):
    for w in workloads:
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            cmd = [binary, "--workloads", w, "--variant", v]
            if a.steps: cmd += ["--steps", str(a.steps)]
            if a.warmup is not None: cmd += ["--warmup", str(a.warmup)]
            if a.graph: cmd += ["--graph", a.graph]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            row = json.loads(line)
            row["round"] = r + 1
            row["loadavg"] = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None
            rows.append(row)
            if out: out.write(json.dumps(row) + "\n"); out.flush()
            print(f"round {r + 1} {w} {v}: {row['median_ms']:.2f} ms/step (train graph {row['train_run_median_ms']:.2f}), "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB, loss_last {row['loss_last']}", file=sys.stderr)

print(f"| workload | variant | rounds | median ms/step | ÷ {variants[0]} | train graph ms | ÷ {variants[0]} | CPU ms/step | ÷ {variants[0]} | peak RSS MB (max) | loss_last |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for w in workloads:
    base = None
    for v in variants:
        rs = [x for x in rows if x["workload"] == w and x["variant"] == v]
        step = statistics.median(x["median_ms"] for x in rs)
        train = statistics.median(x["train_run_median_ms"] for x in rs)
        cpu = statistics.median(x.get("cpu_ms_per_step", float("nan")) for x in rs)
        if base is None: base = (step, train, cpu)
        print(f"| {w} | {v} | {len(rs)} | {step:.2f} | {step / base[0]:.3f}× | {train:.2f} | {train / base[1]:.3f}× | "
              f"{cpu:.2f} | {cpu / base[2]:.3f}× | "
              f"{max(x['peak_rss_mb'] for x in rs):.0f} | {rs[-1]['loss_last']} |")
