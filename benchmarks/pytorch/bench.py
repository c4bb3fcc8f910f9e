#!/usr/bin/env python3
"""PyTorch peer for issue 5: trains W1-W3 and prints one JSON line per workload.

Run through run.sh (it puts OpenBLAS' OpenMP build on LD_LIBRARY_PATH and sets OPENBLAS_CORETYPE on AVX-512 CPUs).
The workload definitions mirror benchmarks/Workloads/WorkloadSpec.cs; keep the two in step.

usage: bench.py [--workloads W1,W2,W3] [--steps N] [--warmup N] [--init DIR] [--show-config]
  --init DIR      start from DIR/<W>.safetensors written by the TorchSharp peer's --dump-init
                  (weights, input, attention_mask, labels) instead of this process' own seeded init
  --show-config   print torch.__config__.show(), the thread setup and the BLAS libraries mapped into the process
"""

import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- workload definitions (mirror of WorkloadSpec.cs) ------------------------------------------------------------
HIDDEN = 384
HEADS = 12
HEAD_SIZE = HIDDEN // HEADS
INTERMEDIATE = 1536
HEAD_HIDDEN = 256
CLASSES = 150
LAYER_NORM_EPS = 1e-12
SEED = 1234
WARMUP_STEPS = 20
INTRA_OP_THREADS = 2
INTER_OP_THREADS = 1
LR, BETA1, BETA2, EPS, WEIGHT_DECAY = 1e-3, 0.9, 0.999, 1e-8, 0.01

# name -> (kind, layers, batch, sequence, timed steps)
WORKLOADS = {
    "W1": ("head", 0, 32, 1, 100),
    "W2": ("encoder", 1, 32, 64, 100),
    "W3": ("encoder", 6, 16, 32, 30),
}


def forward_flops(name):
    """Forward matmul FLOPs of one step: 2*m*k*n per [m,k]x[k,n] product (see WorkloadSpec.ForwardFlops)."""
    kind, layers, batch, seq, _ = WORKLOADS[name]
    if kind == "head":
        return 2 * batch * (HIDDEN * HEAD_HIDDEN + HEAD_HIDDEN * CLASSES)
    tokens = batch * seq
    per_layer = (4 * 2 * tokens * HIDDEN * HIDDEN            # Q, K, V, attention output projections
                 + 2 * 2 * tokens * HIDDEN * INTERMEDIATE    # feed-forward up and down
                 + 2 * 2 * batch * seq * seq * HIDDEN)       # Q.K^T and probabilities.V
    return layers * per_layer + 2 * batch * HIDDEN * CLASSES


def parameter_count(name):
    """Trainable parameters (see WorkloadSpec.ParameterCount)."""
    kind, layers, _, _, _ = WORKLOADS[name]
    if kind == "head":
        return HIDDEN * HEAD_HIDDEN + HEAD_HIDDEN + HEAD_HIDDEN * CLASSES + CLASSES
    per_layer = (4 * (HIDDEN * HIDDEN + HIDDEN) + HIDDEN * INTERMEDIATE + INTERMEDIATE
                 + INTERMEDIATE * HIDDEN + HIDDEN + 2 * 2 * HIDDEN)
    return layers * per_layer + HIDDEN * CLASSES + CLASSES


def flops_per_step(name):
    """Forward + backward ~= 3 x forward matmul FLOPs; the optimizer update is not counted."""
    return 3 * forward_flops(name)


# ---- models (same structure and parameter names as the TorchSharp peer) ------------------------------------------
class HeadModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(HIDDEN, HEAD_HIDDEN)
        self.fc2 = nn.Linear(HEAD_HIDDEN, CLASSES)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class BertLayer(nn.Module):
    """Post-LayerNorm BERT layer (HF BertLayer without dropout), erf GELU."""

    def __init__(self):
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.attention_output = nn.Linear(HIDDEN, HIDDEN)
        self.attention_norm = nn.LayerNorm(HIDDEN, eps=LAYER_NORM_EPS)
        self.intermediate = nn.Linear(HIDDEN, INTERMEDIATE)
        self.output = nn.Linear(INTERMEDIATE, HIDDEN)
        self.output_norm = nn.LayerNorm(HIDDEN, eps=LAYER_NORM_EPS)

    def forward(self, hidden, additive_mask):
        b, s, _ = hidden.shape

        def split_heads(t):
            return t.view(b, s, HEADS, HEAD_SIZE).transpose(1, 2)

        q = split_heads(self.query(hidden))
        k = split_heads(self.key(hidden))
        v = split_heads(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HEAD_SIZE) + additive_mask
        probs = F.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, HIDDEN)
        attended = self.attention_norm(self.attention_output(context) + hidden)
        inner = F.gelu(self.intermediate(attended))
        return self.output_norm(self.output(inner) + attended)


class EncoderClassifier(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList([BertLayer() for _ in range(layers)])
        self.classifier = nn.Linear(HIDDEN, CLASSES)

    def forward(self, hidden, attention_mask):
        # HF get_extended_attention_mask: (1 - mask) * finfo(float32).min, broadcast over heads and queries.
        additive = (1.0 - attention_mask[:, None, None, :]) * torch.finfo(torch.float32).min
        x = hidden
        for layer in self.layers:
            x = layer(x, additive)
        return self.classifier(x.mean(dim=1))


# ---- safetensors (reader for --init) -----------------------------------------------------------------------------
def read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: tensor '{name}' has dtype {info['dtype']}, expected F32 or I64")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(array.copy())
    return out


# ---- measurement ---------------------------------------------------------------------------------------------------
def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not permitted: the peak then covers the whole process so far


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def mapped_blas_libraries():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if any(key in os.path.basename(path) for key in ("blas", "lapack", "mkl", "gomp", "omp")):
                libs.add(path)
    return sorted(libs)


def build(name, init_dir):
    kind, layers, batch, seq, _ = WORKLOADS[name]
    torch.manual_seed(SEED)
    if kind == "head":
        model = HeadModel()
        x = torch.randn(batch, HIDDEN)
        mask = None
    else:
        model = EncoderClassifier(layers)
        x = torch.randn(batch, seq, HIDDEN)
        mask = torch.ones(batch, seq)
    labels = torch.randint(0, CLASSES, (batch,), dtype=torch.int64)
    if init_dir:
        tensors = read_safetensors(os.path.join(init_dir, f"{name}.safetensors"))
        params = dict(model.named_parameters())
        missing = sorted(set(params) - set(tensors))
        if missing:
            raise ValueError(f"{init_dir}/{name}.safetensors lacks parameters {missing}")
        with torch.no_grad():
            for pname, p in params.items():
                if tuple(tensors[pname].shape) != tuple(p.shape):
                    raise ValueError(f"{name}.safetensors: '{pname}' has shape {list(tensors[pname].shape)}, expected {list(p.shape)}")
                p.copy_(tensors[pname])
        x = tensors["input"]
        labels = tensors["labels"]
        if mask is not None:
            mask = tensors["attention_mask"]
    count = sum(p.numel() for p in model.parameters())
    if count != parameter_count(name):
        raise RuntimeError(f"{name}: model has {count} parameters, the workload spec says {parameter_count(name)}")
    model.train()
    forward = (lambda: model(x)) if mask is None else (lambda: model(x, mask))
    return model, forward, labels


def measure(name, warmup, steps, init_dir):
    model, forward, labels = build(name, init_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WEIGHT_DECAY)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(), labels)
        loss.backward()
        optimizer.step()
        return loss

    reset_peak_rss()
    loss_first = float("nan")
    for i in range(warmup):
        loss = step()
        if i == 0:
            loss_first = loss.item()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000.0)
    with torch.no_grad():
        loss_last = F.cross_entropy(forward(), labels).item()
    median = statistics.median(times)
    flops = flops_per_step(name)
    return {
        "system": "PyTorch+OpenBLAS",
        "version": f"torch {torch.__version__}, numpy {np.__version__}",
        "workload": name,
        "median_ms": round(median, 3),
        "min_ms": round(min(times), 3),
        "max_ms": round(max(times), 3),
        "steps": steps,
        "warmup_steps": warmup,
        "flops_per_step": flops,
        "gflop_per_s": round(flops / (median * 1e6), 2),
        "alloc_bytes_per_step": None,  # no managed heap; native allocations are not counted by either peer
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
        "loss_first": loss_first,
        "loss_last": loss_last,
        "blas": ";".join(p for p in mapped_blas_libraries() if "blas" in os.path.basename(p)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument("--steps", type=int, help="timed steps (default: 100, 30 for W3)")
    parser.add_argument("--warmup", type=int, default=WARMUP_STEPS)
    parser.add_argument("--init", help="directory with <W>.safetensors from the TorchSharp peer's --dump-init")
    parser.add_argument("--show-config", action="store_true")
    args = parser.parse_args()

    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if not names or unknown:
        parser.error(f"--workloads expects a comma-separated subset of {','.join(WORKLOADS)}; unknown: {unknown}")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps expects a positive integer")
    if args.warmup < 0:
        parser.error("--warmup expects a non-negative integer")

    torch.set_num_interop_threads(INTER_OP_THREADS)
    torch.set_num_threads(INTRA_OP_THREADS)

    if args.show_config:
        print(torch.__config__.show(), file=sys.stderr)
        print(torch.__config__.parallel_info(), file=sys.stderr)
        torch.mm(torch.randn(64, 64), torch.randn(64, 64))  # make sure BLAS is loaded before listing mappings
        print("mapped BLAS/OpenMP libraries:", *mapped_blas_libraries(), sep="\n  ", file=sys.stderr)
        print("OPENBLAS_CORETYPE=" + os.environ.get("OPENBLAS_CORETYPE", "(unset)"), file=sys.stderr)

    for name in names:
        steps = args.steps if args.steps is not None else WORKLOADS[name][4]
        print(json.dumps(measure(name, args.warmup, steps, args.init)), flush=True)


if __name__ == "__main__":
    main()
