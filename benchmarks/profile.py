#!/usr/bin/env python3
"""Summarises ONNX Runtime profiles (OnnxTune.Benchmarks --profile PREFIX): time per op type and per session.

usage: profile.py PROFILE.json [...]   (one file per session; the file holding the most time is the training graph)
"""
import collections
import json
import sys

for path in sys.argv[1:]:
    events = json.load(open(path))
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    by_op = collections.Counter()
    count = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] += e["dur"]
            count[op] += 1
    total = sum(by_op.values())
    if not runs or total == 0:
        continue
    run_us = sum(e["dur"] for e in runs)
    print(f"{path}: {len(runs)} runs, {run_us / len(runs) / 1000:.2f} ms per run, kernels {total / len(runs) / 1000:.2f} ms per run")
    for op, us in by_op.most_common(12):
        print(f"  {op:<24} {100 * us / total:5.1f}%  {us / len(runs) / 1000:8.2f} ms/run  ({count[op] // len(runs)} nodes)")
