#!/usr/bin/env python3
"""PyTorch peer of W4 (issue 14): fine-tunes all-MiniLM-L6-v2's top two layers + a 150-class head on CLINC150.

Run through run.sh --w4 (OpenBLAS OpenMP build, 2 threads). Reads what `OnnxTune.Benchmarks.Encoder prepare` wrote:
w4.json (settings), model.onnx (the encoder + head whose initializers are the initial weights, head included) and
w4-data.safetensors (OnnxTune's WordPiece token ids, labels, the batch plan, reference logits). The BERT is written
here in torch (HF BertModel semantics, no dropout in the encoder, as in the ONNX export); the frozen prefix
(embeddings, layers 0-3) runs under torch.no_grad, layers 4-5 and the head train with torch.optim.AdamW; each
batch is padded to its own longest sequence (dynamic padding). Prints one JSON line.

usage: w4.py --work DIR
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import peak_rss_mb, read_safetensors, reset_peak_rss  # noqa: E402

HEADS, LN_EPS, MASK_VALUE = 12, 1e-12, -10000.0
CHECK_TOLERANCE = 1e-4


def onnx_weights(path):
    """Initializers of the ONNX model under HF names; the exporter's numbered MatMul weights ([in, out]) are named
    after the bias their product feeds (MatMul -> Add(bias)) and transposed to nn.Linear's [out, in]."""
    model = onnx.load(path)
    g = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names = {}
    for n in g.node:
        if n.op_type != "MatMul" or n.input[1] not in arrays or arrays[n.input[1]].ndim != 2:
            continue
        adds = [c for c in consumers.get(n.output[0], []) if c.op_type == "Add"]
        biases = [i for a in adds for i in a.input if i.endswith(".bias") and i in arrays]
        if len(biases) != 1:
            raise ValueError(f"MatMul {n.name or n.output[0]}: weight {n.input[1]} feeds no single named bias ({biases})")
        names[n.input[1]] = biases[0][: -len(".bias")] + ".weight"
    weights = {}
    for name, a in arrays.items():
        if name in names:
            weights[names[name]] = torch.from_numpy(np.ascontiguousarray(a.T).astype(np.float32))
        elif a.dtype == np.float32 and not name.isdigit():
            weights[name] = torch.from_numpy(a.copy())
    return weights, names


class Bert:
    """HF BertModel forward (post-LN, erf GELU, additive mask (1 - mask) * -10000) + mean pooling + dropout + Linear."""

    def __init__(self, w, layers, trainable_layers, dropout):
        self.w = w
        self.layers = layers
        self.first_trainable = layers - trainable_layers
        self.dropout = dropout

    def embed(self, ids):
        w = self.w
        positions = torch.arange(ids.shape[1])
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][0] + w["embeddings.position_embeddings.weight"][positions]
        return F.layer_norm(x, (x.shape[-1],), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], LN_EPS)

    def layer(self, i, h, additive):
        w, p = self.w, f"encoder.layer.{i}."
        b, s, hidden = h.shape
        d = hidden // HEADS

        def proj(name, x):
            return F.linear(x, w[p + name + ".weight"], w[p + name + ".bias"])

        def heads(t):
            return t.view(b, s, HEADS, d).transpose(1, 2)

        q, k, v = heads(proj("attention.self.query", h)), heads(proj("attention.self.key", h)), heads(proj("attention.self.value", h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + additive
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, hidden)
        h1 = F.layer_norm(proj("attention.output.dense", ctx) + h, (hidden,), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], LN_EPS)
        f = proj("output.dense", F.gelu(proj("intermediate.dense", h1)))
        return F.layer_norm(f + h1, (hidden,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], LN_EPS)

    def prefix(self, ids, mask):
        additive = (1.0 - mask[:, None, None, :].float()) * MASK_VALUE
        h = self.embed(ids)
        for i in range(self.first_trainable):
            h = self.layer(i, h, additive)
        return h, additive

    def suffix(self, h, additive, mask, training):
        for i in range(self.first_trainable, self.layers):
            h = self.layer(i, h, additive)
        m = mask[:, :, None].float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        pooled = F.dropout(pooled, self.dropout, training)
        return F.linear(pooled, self.w["head.dense.weight"], self.w["head.dense.bias"])

    def logits(self, ids, mask):
        with torch.no_grad():
            h, additive = self.prefix(ids, mask)
            return self.suffix(h, additive, mask, training=False)


def ragged(data, prefix):
    ids, offsets = data[f"{prefix}_ids"].numpy(), data[f"{prefix}_offsets"].numpy()
    return [ids[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def pad(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def epochs_of(data, examples):
    flat, ends = data["plan"].numpy(), data["plan_batch_ends"].numpy()
    epochs, start, seen = [], 0, examples
    for end in ends:
        if seen == examples:
            epochs.append([])
            seen = 0
        epochs[-1].append(flat[start:end])
        seen += end - start
        start = end
    return epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    settings = json.load(open(os.path.join(args.work, "w4.json")))
    threads = settings["threads"]
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(settings["seed"])

    data = read_safetensors(os.path.join(args.work, "w4-data.safetensors"))
    train, test = ragged(data, "train"), ragged(data, "test")
    train_labels, test_labels = data["train_labels"], data["test_labels"].numpy()
    pad_id = int(data["pad_token_id"][0])
    plan = epochs_of(data, len(train))
    reset_peak_rss()

    started = time.perf_counter()
    weights, renamed = onnx_weights(os.path.join(args.work, settings["model"]))
    layers = 1 + max(int(n.split(".")[2]) for n in weights if n.startswith("encoder.layer."))
    model = Bert(weights, layers, settings["trainable_layers"], settings["dropout"])
    trainable = sorted({renamed.get(n, n) for n in settings["trainable"]})
    expected = sorted(n for n in weights if n.startswith("head.") or any(n.startswith(f"encoder.layer.{i}.") for i in range(model.first_trainable, layers)))
    if trainable != expected:
        raise SystemExit(f"w4.py: the trainable set from w4.json {trainable} is not layers {model.first_trainable}..{layers - 1} + head {expected}")

    # The forward must be the ONNX model's before anything is timed.
    ref = data["check_logits"]
    diff = (model.logits(data["check_input_ids"], data["check_attention_mask"]) - ref).abs().max().item()
    if not diff <= CHECK_TOLERANCE:
        raise SystemExit(f"w4.py: torch forward differs from ONNX Runtime's logits by {diff:.3e} (> {CHECK_TOLERANCE})")
    print(f"[pytorch] forward matches ONNX Runtime on {ref.shape[0]} sentences (max |diff| {diff:.2e})", file=sys.stderr)

    params = []
    for n in trainable:
        weights[n] = weights[n].clone().requires_grad_(True)
        params.append(weights[n])
    optimizer = torch.optim.AdamW(params, lr=settings["learning_rate"], weight_decay=settings["weight_decay"])
    clock = time.perf_counter()
    setup = clock - started
    epoch_losses, epoch_seconds, steps = [], [], 0
    for e, batches in enumerate(plan):
        t0, losses = time.perf_counter(), []
        for members in batches:
            ids, mask = pad([train[i] for i in members], pad_id)
            with torch.no_grad():
                h, additive = model.prefix(ids, mask)
            logits = model.suffix(h, additive, mask, training=True)
            loss = F.cross_entropy(logits, train_labels[torch.from_numpy(members)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
        epoch_losses.append(float(np.mean(losses)))
        epoch_seconds.append(time.perf_counter() - t0)
        print(f"[pytorch] epoch {e + 1}/{len(plan)}: mean loss {epoch_losses[-1]:.4f}, {epoch_seconds[-1]:.1f} s", file=sys.stderr)
    wall = time.perf_counter() - started
    peak = peak_rss_mb()

    t0 = time.perf_counter()
    order = sorted(range(len(test)), key=lambda i: len(test[i]))
    correct = 0
    for k in range(0, len(order), 64):
        chunk = order[k:k + 64]
        ids, mask = pad([test[i] for i in chunk], pad_id)
        predicted = model.logits(ids, mask).argmax(-1).numpy()
        correct += int((predicted == test_labels[chunk]).sum())
    print(json.dumps({
        "mode": "w4", "system": "PyTorch", "version": torch.__version__, "train_examples": len(train), "epochs": len(plan),
        "batch_size": settings["batch_size"], "steps": steps, "wall_seconds": wall,
        "examples_per_second": len(train) * len(plan) / wall, "peak_rss_mb": peak, "test_examples": len(test),
        "test_accuracy": correct / len(test), "epoch_losses": epoch_losses, "epoch_seconds": epoch_seconds,
        "parts": {"weights_from_onnx_s": setup, "train_s": wall - setup}, "eval_seconds": time.perf_counter() - t0,
        "threads": threads, "notes": f"frozen prefix under no_grad every step, dynamic padding, forward check {diff:.1e}",
    }), flush=True)


if __name__ == "__main__":
    main()
