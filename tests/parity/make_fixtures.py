#!/usr/bin/python3
"""Generates the PyTorch reference fixtures under tests/fixtures/ (see tests/parity/README.md).

Run with Debian's Python (python3-torch, python3-onnx, python3-numpy):

    /usr/bin/python3 tests/parity/make_fixtures.py

Everything is seeded; a rerun with the same torch/onnx/numpy versions rewrites byte-identical data and expected
files (the ONNX files embed the producer version).
"""
import json
import math
import os
import shutil
import struct
import sys
from collections import OrderedDict

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_eval  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
PARITY_DIR = os.path.join(FIXTURES, "parity")
CHECK_DIR = os.path.join(FIXTURES, "check")
OPSET = 14
N_SAMPLES = 37
BATCH = 8
EPOCHS = 3
# Rule the OnnxTune side should apply elementwise: |onnxtune - expected| <= RTOL * max(|expected|, FLOOR).
RTOL = 1e-4
FLOOR = 1e-2

torch.set_num_threads(1)  # deterministic reduction order


# --------------------------------------------------------------------------------------------------- safetensors
_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64",
              np.dtype(np.int32): "I32", np.dtype(np.bool_): "BOOL"}
_ST_NP = {v: k for k, v in _ST_DTYPES.items()}


def write_safetensors(path, tensors, metadata=None):
    """Writes the safetensors format by hand: u64 LE header length, JSON header, raw little-endian data."""
    header = OrderedDict()
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        dt = _ST_NP[info["dtype"]].newbyteorder("<")
        out[name] = np.frombuffer(raw[base + s:base + e], dtype=dt).reshape(info["shape"]).astype(dt.newbyteorder("="))
    return out


# --------------------------------------------------------------------------------------------------- helpers
def op_types(model):
    seen = []
    for n in model.graph.node:
        if n.op_type not in seen:
            seen.append(n.op_type)
    return sorted(seen)


def export_torch(model, example_inputs, input_names, output_names, path, dynamic_seq=None, training=False):
    dyn = {n: {0: "batch"} for n in input_names + output_names}
    if dynamic_seq:
        for n, axis in dynamic_seq.items():
            dyn[n][axis] = "seq"
    torch.onnx.export(
        model, tuple(example_inputs), path, input_names=input_names, output_names=output_names,
        opset_version=OPSET, dynamic_axes=dyn, do_constant_folding=not training, export_params=True,
        keep_initializers_as_inputs=False,
        training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    return m


def check_graph_matches(model_proto, torch_fn, feeds, atol=1e-5):
    """Runs the ONNX graph with onnx_eval and compares with torch_fn(feeds) (dict name -> array)."""
    got = onnx_eval.run_model(model_proto, feeds)
    want = torch_fn(feeds)
    worst = 0.0
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape, (name, g.shape, w.shape)
        err = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64))))
        assert err <= atol * max(1.0, float(np.max(np.abs(w)))), f"{name}: ONNX vs torch max abs diff {err}"
        worst = max(worst, err)
    return worst


def initializer_map(model_proto):
    return OrderedDict((i.name, numpy_helper.to_array(i)) for i in model_proto.graph.initializer)


# --------------------------------------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self, sizes, acts):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1])
        self.act1 = acts[0]
        self.fc2 = nn.Linear(sizes[1], sizes[2])
        self.act2 = acts[1] if len(acts) > 1 else None
        if len(sizes) > 3:
            self.fc3 = nn.Linear(sizes[2], sizes[3])

    def forward(self, x):
        h = self.fc2(self.act1(self.fc1(x)))
        if self.act2 is not None:
            h = self.fc3(self.act2(h))
        return h


class TinyAttention(nn.Module):
    """Pre-LN transformer block over [batch, 5, 8] with 2 heads, mean pooling and a linear head.

    Projections are plain parameters stored as [in, out] so the exporter emits MatMul(x, W) with the named
    initializer (nn.Linear on a 3-D input would export a folded, renamed transposed copy of the weight). The key
    projection has no bias: a key bias only shifts every score of a query by the same amount, so its gradient is
    mathematically zero and AdamW would amplify rounding noise into lr-sized steps.
    """

    def __init__(self, dim=8, heads=2, hidden=16, classes=4, gelu=True):
        super().__init__()
        self.dim, self.heads, self.hd = dim, heads, dim // heads
        self.ln1 = nn.LayerNorm(dim)
        self.wq = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))
        self.bq = nn.Parameter(torch.randn(dim) * 0.1)
        self.wk = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))
        self.wv = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))
        self.bv = nn.Parameter(torch.randn(dim) * 0.1)
        self.wo = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))
        self.bo = nn.Parameter(torch.randn(dim) * 0.1)
        self.ln2 = nn.LayerNorm(dim)
        self.w1 = nn.Parameter(torch.randn(dim, hidden) / math.sqrt(dim))
        self.b1 = nn.Parameter(torch.randn(hidden) * 0.1)
        self.w2 = nn.Parameter(torch.randn(hidden, dim) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.randn(dim) * 0.1)
        self.head = nn.Linear(dim, classes)
        self.gelu = gelu
        # Fresh LayerNorms are all ones/zeros, and torch.onnx.export deduplicates initializers with equal values
        # (ln2.weight would become a second use of ln1.weight), so start from "pretrained"-looking values.
        with torch.no_grad():
            for ln in (self.ln1, self.ln2):
                ln.weight.add_(torch.randn(dim) * 0.1)
                ln.bias.add_(torch.randn(dim) * 0.1)

    lora = None  # LoRA cases: fn(name, input, output) -> output with the adapter branch added

    def _mm(self, h, name):
        y = torch.matmul(h, getattr(self, name))
        return y if self.lora is None else self.lora(name, h, y)

    def forward(self, x):
        b = x.shape[0]  # exported as Shape -> Gather: an integer path the gradient walker must prune
        s = x.shape[1]
        h = self.ln1(x)
        q = (self._mm(h, "wq") + self.bq).reshape(b, s, self.heads, self.hd).transpose(1, 2)
        k = self._mm(h, "wk").reshape(b, s, self.heads, self.hd).transpose(1, 2)
        v = (self._mm(h, "wv") + self.bv).reshape(b, s, self.heads, self.hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
        att = torch.softmax(scores, dim=-1)
        a = torch.matmul(att, v).transpose(1, 2).reshape(b, s, self.dim)
        x2 = x + self._mm(a, "wo") + self.bo
        h2 = self.ln2(x2)
        f = self._mm(h2, "w1") + self.b1
        f = F.gelu(f) if self.gelu else torch.relu(f)
        x3 = x2 + self._mm(f, "w2") + self.b2
        return self.head(x3.mean(dim=1))


class HelperMLP(nn.Module):
    """PyTorch re-implementation of the onnx.helper graph of case g (parameters named like its initializers)."""

    def __init__(self, inits):
        super().__init__()
        for k, v in inits.items():
            setattr(self, k, nn.Parameter(torch.from_numpy(v.copy())))

    def forward(self, x):
        h = torch.relu(x @ self.W1.t() + self.b1)  # Gemm transB=1
        logits = h @ self.W2 + self.b2  # Gemm transB=0
        return logits


def build_helper_model(path, rng):
    """Case g: a graph written with onnx.helper (not by the PyTorch exporter)."""
    inits = OrderedDict()
    inits["W1"] = (rng.standard_normal((16, 8)) / math.sqrt(8)).astype(np.float32)  # [out, in], transB=1
    inits["b1"] = (rng.standard_normal(16) * 0.1).astype(np.float32)
    inits["W2"] = (rng.standard_normal((16, 4)) / math.sqrt(16)).astype(np.float32)  # [in, out], transB=0
    inits["b2"] = (rng.standard_normal(4) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["input", "W1", "b1"], ["hidden_pre"], name="gemm_1", transB=1),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu_1"),
        helper.make_node("Gemm", ["hidden", "W2", "b2"], ["logits"], name="gemm_2"),
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], name="log_softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "helper_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, producer_name="onnx.helper", producer_version=onnx.__version__,
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, path)
    return model, inits


# --------------------------------------------------------------------------------------------------- training
LOSSES = {
    "cross-entropy": lambda out, y: F.cross_entropy(out, y),
    "mse": lambda out, y: F.mse_loss(out, y),
    "bce-with-logits": lambda out, y: F.binary_cross_entropy_with_logits(out, y),
    "l1": lambda out, y: F.l1_loss(out, y),
}

SGD_DEFAULTS = dict(lr=None, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)
ADAMW_DEFAULTS = dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2, amsgrad=False)


def train(model, x_feeds, labels, loss_name, opt_name, hp, frozen, max_grad_norm, epochs, batch_size, dtype):
    """Mirrors DataLoader(shuffle=False, drop_last=False): mean loss per batch, one optimizer step per batch."""
    model = model.to(dtype)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    params = [p for n, p in model.named_parameters() if n not in frozen]
    if opt_name == "sgd":
        opt = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                              weight_decay=hp["weight_decay"], nesterov=hp["nesterov"])
    else:
        opt = torch.optim.AdamW(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                                weight_decay=hp["weight_decay"], amsgrad=False)
    xs = [torch.from_numpy(v).to(dtype) if v.dtype.kind == "f" else torch.from_numpy(v) for v in x_feeds.values()]
    y = torch.from_numpy(labels)
    if y.dtype.is_floating_point:
        y = y.to(dtype)
    n = xs[0].shape[0]
    log = {"epoch_mean_loss": [], "epoch_sample_weighted_loss": [], "step_losses": [], "grad_norms": [],
           "clipped_steps": 0, "steps": 0}
    model.train()
    for _ in range(epochs):
        losses, weights = [], []
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            opt.zero_grad(set_to_none=True)
            out = model(*[x[sl] for x in xs])
            loss = LOSSES[loss_name](out, y[sl])
            loss.backward()
            norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)).item()
            log["grad_norms"].append(norm)
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                if norm > max_grad_norm:
                    log["clipped_steps"] += 1
            opt.step()
            log["steps"] += 1
            losses.append(loss.item())
            weights.append(sl.stop - sl.start)
            log["step_losses"].append(loss.item())
        log["epoch_mean_loss"].append(float(np.mean(losses)))
        log["epoch_sample_weighted_loss"].append(float(np.dot(losses, weights) / sum(weights)))
    model.eval()
    weights_out = OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in model.named_parameters())
    state = OrderedDict()
    for k, p in model.named_parameters():
        if k in frozen:
            continue
        st = opt.state[p]
        if opt_name == "sgd" and st.get("momentum_buffer") is not None:
            state[k + ".momentum_buffer"] = st["momentum_buffer"].detach().cpu().numpy().copy()
        if opt_name == "adamw":
            state[k + ".exp_avg"] = st["exp_avg"].detach().cpu().numpy().copy()
            state[k + ".exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().numpy().copy()
    return weights_out, state, log


def compare(a, b):
    """Max abs diff, max of |a-b| / max(|b|, FLOOR), and max plain |a-b| / |b| over all tensors."""
    mad, mrel, prel = 0.0, 0.0, 0.0
    for k in b:
        d = np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))
        mad = max(mad, float(d.max()))
        mrel = max(mrel, float((d / np.maximum(np.abs(b[k].astype(np.float64)), FLOOR)).max()))
        prel = max(prel, float((d / np.maximum(np.abs(b[k].astype(np.float64)), 1e-30)).max()))
    return mad, mrel, prel


# --------------------------------------------------------------------------------------------------- cases
def make_data(case_seed, x_shape, label_kind, classes, scale=1.0):
    rng = np.random.default_rng(1000 + case_seed)
    x = (rng.standard_normal((N_SAMPLES,) + x_shape) * scale).astype(np.float32)
    flat = x.reshape(N_SAMPLES, -1)
    teacher = rng.standard_normal((flat.shape[1], classes))
    z = flat.astype(np.float64) @ teacher
    if label_kind == "class":
        y = np.argmax(z + rng.standard_normal(z.shape) * 0.5, axis=1).astype(np.int64)
    elif label_kind == "multilabel":
        y = (z + rng.standard_normal(z.shape) * 0.5 > 0).astype(np.float32)
    else:
        y = (np.tanh(z / math.sqrt(flat.shape[1])) + 0.05 * rng.standard_normal(z.shape)).astype(np.float32)
    return x, y


CASES = [
    dict(name="a_mlp_ce_sgd_momentum",
         description="MLP 8->16 ReLU ->4, cross-entropy, SGD momentum 0.9 + weight decay 1e-3 (L2 on the gradient)",
         model="mlp", sizes=[8, 16, 4], acts=["relu"], label="class", loss="cross-entropy",
         optimizer="sgd", hp=dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    dict(name="b_mlp_ce_adamw",
         description="same MLP and data as a, AdamW with PyTorch defaults except lr 1e-2 (tests the CLI defaults)",
         model="mlp", sizes=[8, 16, 4], acts=["relu"], label="class", loss="cross-entropy",
         optimizer="adamw", hp=dict(lr=1e-2), data_seed_of="a_mlp_ce_sgd_momentum", model_seed_of="a_mlp_ce_sgd_momentum"),
    dict(name="c_mlp_ce_adamw_frozen_fc1",
         description="case b with the first layer (fc1.weight, fc1.bias) frozen via --frozen 'fc1.*'",
         model="mlp", sizes=[8, 16, 4], acts=["relu"], label="class", loss="cross-entropy",
         optimizer="adamw", hp=dict(lr=1e-2), frozen_globs=["fc1.*"],
         data_seed_of="a_mlp_ce_sgd_momentum", model_seed_of="a_mlp_ce_sgd_momentum"),
    dict(name="c2_mlp_ce_sgd_frozen_fc2",
         description="case a (SGD momentum 0.9 + weight decay 1e-3) with the last layer frozen via --frozen 'fc2.*': "
                     "the gradient must still flow back through the frozen fc2.weight to fc1",
         model="mlp", sizes=[8, 16, 4], acts=["relu"], label="class", loss="cross-entropy",
         optimizer="sgd", hp=dict(lr=0.1, momentum=0.9, weight_decay=1e-3), frozen_globs=["fc2.*"],
         data_seed_of="a_mlp_ce_sgd_momentum", model_seed_of="a_mlp_ce_sgd_momentum"),
    dict(name="d_mlp_mse_sgd",
         description="regression MLP 8->16 Tanh ->16 Sigmoid ->2, mse, plain SGD",
         model="mlp", sizes=[8, 16, 16, 2], acts=["tanh", "sigmoid"], label="regression", loss="mse",
         optimizer="sgd", hp=dict(lr=0.2)),
    dict(name="e_mlp_bce_adamw_clip",
         description="multi-label MLP 8->16 ReLU ->5, bce-with-logits on float 0/1 labels, AdamW lr 1e-2 with "
                     "clip_grad_norm_ max_norm 1.0 (inputs scaled x8 so clipping is active on some steps, not all)",
         model="mlp", sizes=[8, 16, 5], acts=["relu"], label="multilabel", loss="bce-with-logits",
         optimizer="adamw", hp=dict(lr=1e-2), max_grad_norm=1.0, x_scale=8.0),
    dict(name="f_attention_gelu_ce_adamw",
         description="tiny pre-LN self-attention block over [batch, 5, 8] (2 heads; LayerNorm decomposed by the "
                     "exporter; Gelu exported via Erf), mean pooling, Linear head, cross-entropy, AdamW lr 1e-2",
         model="attention", gelu=True, label="class", loss="cross-entropy", optimizer="adamw", hp=dict(lr=1e-2)),
    dict(name="f2_attention_relu_ce_adamw",
         description="case f with ReLU instead of Gelu, so every op is in issue 2's required gradient-rule list",
         model="attention", gelu=False, label="class", loss="cross-entropy", optimizer="adamw", hp=dict(lr=1e-2),
         data_seed_of="f_attention_gelu_ce_adamw", model_seed_of="f_attention_gelu_ce_adamw"),
    dict(name="g_helper_gemm_ce_sgd",
         description="graph written with onnx.helper (not the PyTorch exporter): Gemm transB=1, Relu, Gemm transB=0, "
                     "outputs logits and log_probs (LogSoftmax); input named 'input', batch dim 'N', opset 13; "
                     "cross-entropy on --loss-output logits, SGD momentum 0.9 + weight decay 1e-2",
         model="helper", label="class", loss="cross-entropy", loss_output="logits",
         optimizer="sgd", hp=dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    dict(name="h_mlp_l1_sgd_momentum",
         description="regression MLP 8->16 ReLU ->3, l1 loss, SGD momentum 0.5",
         model="mlp", sizes=[8, 16, 3], acts=["relu"], label="regression", loss="l1",
         optimizer="sgd", hp=dict(lr=0.05, momentum=0.5)),
    dict(name="i_mlp_ce_ignore_index_adamw",
         description="case b's model and data with every 4th label set to -100 (PyTorch's default ignore_index): "
                     "the mean runs over non-ignored rows only; every batch keeps at least one real label",
         model="mlp", sizes=[8, 16, 4], acts=["relu"], label="class", loss="cross-entropy", ignore_every=4,
         optimizer="adamw", hp=dict(lr=1e-2), data_seed_of="a_mlp_ce_sgd_momentum",
         model_seed_of="a_mlp_ce_sgd_momentum"),
]
ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
# Fixed per-case seeds (not list positions, so adding a case does not change the others).
SEEDS = {
    "a_mlp_ce_sgd_momentum": 1,
    "b_mlp_ce_adamw": 2,
    "c_mlp_ce_adamw_frozen_fc1": 3,
    "d_mlp_mse_sgd": 4,
    "e_mlp_bce_adamw_clip": 5,
    "f_attention_gelu_ce_adamw": 6,
    "f2_attention_relu_ce_adamw": 7,
    "g_helper_gemm_ce_sgd": 8,
    "h_mlp_l1_sgd_momentum": 9,
    "i_mlp_ce_ignore_index_adamw": 10,
    "c2_mlp_ce_sgd_frozen_fc2": 11,
}
assert set(SEEDS) == {c["name"] for c in CASES}


def glob_match(name, globs):
    import fnmatch
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def build_case(case):
    name = case["name"]
    out_dir = os.path.join(PARITY_DIR, name)
    os.makedirs(out_dir, exist_ok=True)
    data_seed = SEEDS[case.get("data_seed_of", name)]
    model_seed = SEEDS[case.get("model_seed_of", name)]
    model_path = os.path.join(out_dir, "model.onnx")

    if case["model"] == "attention":
        x, y = make_data(data_seed, (5, 8), case["label"], 4)
    elif case["model"] == "helper":
        x, y = make_data(data_seed, (8,), case["label"], 4)
    else:
        x, y = make_data(data_seed, (case["sizes"][0],), case["label"], case["sizes"][-1], case.get("x_scale", 1.0))
    if case.get("ignore_every"):
        y = y.copy()
        y[::case["ignore_every"]] = -100

    input_name = "input" if case["model"] == "helper" else "x"
    outputs = ["logits", "log_probs"] if case["model"] == "helper" else ["logits"]
    loss_output = case.get("loss_output", outputs[0])

    def make_module():
        torch.manual_seed(model_seed)
        if case["model"] == "mlp":
            return MLP(case["sizes"], [ACTS[a]() for a in case["acts"]])
        if case["model"] == "attention":
            return TinyAttention(gelu=case["gelu"])
        return HelperMLP(helper_inits)

    if case["model"] == "helper":
        proto, helper_inits = build_helper_model(model_path, np.random.default_rng(model_seed))
        module = make_module().eval()
    else:
        module = make_module().eval()
        proto = export_torch(module, [torch.from_numpy(x[:3])], [input_name], outputs, model_path)

    # The ONNX initializers must be exactly the torch parameters (same names, same values, same layout).
    inits = initializer_map(proto)
    params = OrderedDict((k, v.detach().numpy()) for k, v in module.named_parameters())
    for k, v in params.items():
        assert k in inits, f"{name}: parameter {k} not an ONNX initializer (have {list(inits)})"
        assert inits[k].shape == v.shape and np.array_equal(inits[k], v), f"{name}: initializer {k} differs"
    float_non_params = [k for k, v in inits.items() if v.dtype.kind == "f" and k not in params]
    frozen = [k for k in params if glob_match(k, case.get("frozen_globs", []))]

    # The exported graph computes what the module computes.
    def torch_fn(feeds):
        with torch.no_grad():
            logits = module(torch.from_numpy(feeds[input_name])).numpy()
        res = {"logits": logits}
        if "log_probs" in outputs:
            res["log_probs"] = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
        return res

    eval_err = check_graph_matches(proto, torch_fn, {input_name: x})

    # Hyperparameters: PyTorch defaults plus the case's overrides.
    opt = case["optimizer"]
    hp = dict(SGD_DEFAULTS if opt == "sgd" else ADAMW_DEFAULTS)
    hp.update(case["hp"])
    max_grad_norm = case.get("max_grad_norm")

    feeds = OrderedDict([(input_name, x)])
    w32, state32, log = train(make_module(), feeds, y, case["loss"], opt, hp, set(frozen), max_grad_norm,
                              EPOCHS, BATCH, torch.float32)
    w64, _, log64 = train(make_module(), feeds, y, case["loss"], opt, hp, set(frozen), max_grad_norm,
                          EPOCHS, BATCH, torch.float64)
    fp_abs, fp_rel, fp_plain = compare(w64, w32)
    assert fp_rel < RTOL / 10, f"{name}: float32 vs float64 reference differ by {fp_rel} (too sensitive a case)"
    assert log["clipped_steps"] == log64["clipped_steps"], f"{name}: clipping decisions differ fp32/fp64"
    if max_grad_norm is not None:
        assert 0 < log["clipped_steps"] < log["steps"], f"{name}: clipping should be active on some steps only"
        assert min(abs(g - max_grad_norm) for g in log["grad_norms"]) > 1e-2, f"{name}: a norm is at the threshold"
    for k in frozen:
        assert np.array_equal(w32[k], params[k]), f"{name}: frozen {k} moved"
    moved = {k: float(np.max(np.abs(w32[k] - params[k]))) for k in params if k not in frozen}
    assert min(moved.values()) > 1e-4, f"{name}: a trainable parameter barely moved: {moved}"

    write_safetensors(os.path.join(out_dir, "data.safetensors"),
                      OrderedDict([(input_name, x), ("labels", y)]),
                      {"producer": "tests/parity/make_fixtures.py", "case": name})
    write_safetensors(os.path.join(out_dir, "expected.safetensors"), w32,
                      {"producer": "tests/parity/make_fixtures.py", "case": name, "what": "weights after training"})
    write_safetensors(os.path.join(out_dir, "expected_optimizer_state.safetensors"), state32,
                      {"producer": "tests/parity/make_fixtures.py", "case": name,
                       "what": "optimizer state after training, named <p><suffix> as in the checkpoint contract"})
    for fname, ref in (("data.safetensors", OrderedDict([(input_name, x), ("labels", y)])),
                       ("expected.safetensors", w32)):
        back = read_safetensors(os.path.join(out_dir, fname))
        assert list(back) == list(ref) and all(np.array_equal(back[k], ref[k]) for k in ref)

    # CLI command lines (run from the case folder). Only flags that differ from the CLI defaults are given, so
    # case b also checks that the defaults are PyTorch's.
    art = ["onnxtune", "artifacts", "model.onnx", "--out", "artifacts"]
    if float_non_params:
        for k in params:
            art += ["--trainable", k]
    for g in case.get("frozen_globs", []):
        art += ["--frozen", g]
    art += ["--loss", case["loss"]]
    if len(outputs) > 1:
        art += ["--loss-output", loss_output]
    art += ["--optimizer", opt, "--lr", repr(hp["lr"])]
    defaults = SGD_DEFAULTS if opt == "sgd" else ADAMW_DEFAULTS
    if hp["weight_decay"] != defaults["weight_decay"]:
        art += ["--weight-decay", repr(hp["weight_decay"])]
    if opt == "sgd" and hp["momentum"] != 0.0:
        art += ["--momentum", repr(hp["momentum"])]
    if opt == "adamw":
        if hp["betas"][0] != 0.9:
            art += ["--beta1", repr(hp["betas"][0])]
        if hp["betas"][1] != 0.999:
            art += ["--beta2", repr(hp["betas"][1])]
        if hp["eps"] != 1e-8:
            art += ["--eps", repr(hp["eps"])]
    if max_grad_norm is not None:
        art += ["--max-grad-norm", repr(max_grad_norm)]
    tr = ["onnxtune", "train", "artifacts", "--data", "data.safetensors", "--out", "trained",
          "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--no-shuffle"]

    hp_out = {"lr": hp["lr"], "weight_decay": hp["weight_decay"]}
    if opt == "sgd":
        hp_out.update(momentum=hp["momentum"], dampening=hp["dampening"], nesterov=hp["nesterov"])
    else:
        hp_out.update(betas=hp["betas"], eps=hp["eps"], amsgrad=False)
    hp_out["max_grad_norm"] = max_grad_norm

    info = OrderedDict()
    info["case"] = name
    info["description"] = case["description"]
    info["producer"] = {"name": proto.producer_name, "version": proto.producer_version,
                        "exporter": "onnx.helper" if case["model"] == "helper" else "torch.onnx.export (eval mode)",
                        "opset": proto.opset_import[0].version, "torch": torch.__version__, "onnx": onnx.__version__}
    info["op_types"] = op_types(proto)
    info["inputs"] = [{"name": input_name, "dtype": "float32", "shape": ["batch" if case["model"] != "helper" else "N"]
                       + list(x.shape[1:])}]
    info["outputs"] = outputs
    info["loss_output"] = loss_output
    info["parameters"] = [{"name": k, "shape": list(v.shape), "trainable": k not in frozen} for k, v in params.items()]
    info["parameter_name_mapping"] = "identity: every torch parameter name is the ONNX initializer name, same layout"
    info["float_initializers_not_parameters"] = float_non_params
    info["trainable_globs"] = [k for k in params] if float_non_params else None
    info["frozen_globs"] = case.get("frozen_globs", [])
    info["frozen_parameters"] = frozen
    info["loss"] = case["loss"]
    info["loss_reduction"] = "mean"
    if case["loss"] == "cross-entropy":
        info["ignore_index"] = -100
        info["ignored_labels"] = int((y == -100).sum())
    info["label"] = "labels"
    info["label_dtype"] = "int64" if y.dtype == np.int64 else "float32"
    info["label_shape"] = list(y.shape)
    info["optimizer"] = opt
    info["hyperparameters"] = hp_out
    info["epochs"] = EPOCHS
    info["batch_size"] = BATCH
    info["samples"] = N_SAMPLES
    info["batches_per_epoch"] = math.ceil(N_SAMPLES / BATCH)
    info["last_batch_size"] = N_SAMPLES - BATCH * (N_SAMPLES // BATCH)
    info["shuffle"] = False
    info["steps"] = log["steps"]
    info["epoch_mean_loss"] = log["epoch_mean_loss"]
    info["epoch_mean_loss_definition"] = "unweighted mean of the per-batch mean losses seen during the epoch " \
                                         "(before each step)"
    info["epoch_sample_weighted_loss"] = log["epoch_sample_weighted_loss"]
    info["step_losses"] = log["step_losses"]
    info["grad_norms_before_clipping"] = log["grad_norms"]
    info["clipped_steps"] = log["clipped_steps"]
    info["commands"] = {"cwd": "this case folder", "artifacts": art, "train": tr,
                        "artifacts_line": " ".join(_quote(a) for a in art),
                        "train_line": " ".join(_quote(a) for a in tr)}
    info["expected"] = {
        "weights": "expected.safetensors: every parameter (trainable and frozen) after training, keyed by ONNX "
                   "initializer name; compare with trained/model.onnx initializers",
        "optimizer_state": "expected_optimizer_state.safetensors",
        "tolerance": {"rule": "|got - expected| <= rtol * max(|expected|, floor)", "rtol": RTOL, "floor": FLOOR},
        "float64_reference_vs_expected": {"max_abs_diff": fp_abs, "max_rel_diff_with_floor": fp_rel,
                                          "max_plain_rel_diff": fp_plain},
        "onnx_graph_vs_torch_forward_max_abs_diff": eval_err,
        "max_abs_weight_change": moved,
    }
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


# --------------------------------------------------------------------------------------------------- LoRA cases
# LoRA exactly as PEFT computes it: y = base(x) + (alpha / r) * lora_B(lora_A(dropout(x))), lora_A [r, in] and
# lora_B [out, r], B zeros, the base weight frozen. lora_A starts from OnnxTune's deterministic draw of PEFT's
# kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)) (src/OnnxTune.Autodiff/Lora/LoraInitializer.cs),
# reproduced here bit for bit, so `onnxtune artifacts --lora` starts where this reference starts.
_M64 = (1 << 64) - 1


def lora_initial_a(seed, name, rank, in_features):
    import hashlib
    state = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode("utf-8")).digest()[:8], "little")
    bound = 1.0 / math.sqrt(in_features)
    out = np.empty(rank * in_features, dtype=np.float32)
    for i in range(out.size):
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        u = (z >> 11) * (1.0 / (1 << 53))
        out[i] = np.float32((2 * u - 1) * bound)
    return out.reshape(rank, in_features)


class LoraModel(nn.Module):
    """A frozen base module plus PEFT LoRA tensors on some of its weights. Parameter names: base.<onnx name> and
    lora.<key>; ONNX_NAMES maps them to the ONNX initializer names (<W>.lora_A / <W>.lora_B)."""

    def __init__(self, base, targets, rank, alpha, seed):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora = nn.ParameterDict()
        self.onnx_names = {}
        self.layout = {}
        for w in targets:
            weight = dict(base.named_parameters())[w]
            # nn.Linear weights are [out, in]; the attention block's matmul weights are [in, out].
            out_in = w.endswith(".weight") and isinstance(base.get_submodule(w.rsplit(".", 1)[0]), nn.Linear)
            fan_in, fan_out = (weight.shape[1], weight.shape[0]) if out_in else (weight.shape[0], weight.shape[1])
            key = w.replace(".", "_")
            self.lora[key + "_A"] = nn.Parameter(torch.from_numpy(lora_initial_a(seed, w + ".lora_A", rank, fan_in)))
            self.lora[key + "_B"] = nn.Parameter(torch.zeros(fan_out, rank))
            self.onnx_names["lora." + key + "_A"] = w + ".lora_A"
            self.onnx_names["lora." + key + "_B"] = w + ".lora_B"
            self.layout[w] = out_in
        for name, module in base.named_modules():
            if isinstance(module, nn.Linear) and name + ".weight" in targets:
                module.register_forward_hook(self._linear_hook(name + ".weight"))
        if hasattr(base, "_mm"):
            base.lora = lambda name, h, y: self._branch(name, h, y) if name in targets else y
        for name, _ in base.named_parameters():
            self.onnx_names["base." + name] = name

    def _branch(self, w, x, y):
        key = w.replace(".", "_")
        return y + self.scale * F.linear(F.linear(x, self.lora[key + "_A"]), self.lora[key + "_B"])

    def _linear_hook(self, w):
        return lambda module, inputs, output: self._branch(w, inputs[0], output)

    def forward(self, x):
        return self.base(x)

    def merged(self):
        """The base weights with scale * (B @ A) folded in, in each weight's own layout."""
        out = OrderedDict()
        params = dict(self.base.named_parameters())
        for w, out_in in self.layout.items():
            key = w.replace(".", "_")
            delta = self.scale * (self.lora[key + "_B"] @ self.lora[key + "_A"])
            out[w] = (params[w] + (delta if out_in else delta.t())).detach().cpu().numpy().copy()
        return out


LORA_CASES = [
    dict(name="l1_mlp_lora_adamw",
         description="MLP 8->16 ReLU ->4 (Gemm transB=1, nn.Linear layout [out, in]) with LoRA rank 4, alpha 8 on "
                     "fc1.weight and fc2.weight, fc2.bias trainable, the rest frozen; cross-entropy, AdamW lr 1e-2",
         model="mlp", sizes=[8, 16, 4], acts=["relu"], label="class", loss="cross-entropy",
         optimizer="adamw", hp=dict(lr=1e-2), lora=["fc1.weight", "fc2.weight"], rank=4, alpha=8.0,
         trainable=["fc2.bias"], data_seed_of="a_mlp_ce_sgd_momentum", model_seed_of="a_mlp_ce_sgd_momentum"),
    dict(name="l2_attention_lora_sgd",
         description="case f2's attention block (MatMul weights stored [in, out]) with LoRA at the defaults (rank 8, "
                     "alpha 16) on the query and value projections wq, wv, and the Linear head trainable "
                     "(--trainable 'head.*'); cross-entropy, SGD lr 0.05 momentum 0.9",
         model="attention", gelu=False, label="class", loss="cross-entropy",
         optimizer="sgd", hp=dict(lr=0.05, momentum=0.9), lora=["wq", "wv"], rank=None, alpha=None,
         trainable=["head.*"], data_seed_of="f_attention_gelu_ce_adamw", model_seed_of="f_attention_gelu_ce_adamw"),
]


def build_lora_case(case):
    name = case["name"]
    out_dir = os.path.join(PARITY_DIR, name)
    os.makedirs(out_dir, exist_ok=True)
    data_seed = SEEDS[case["data_seed_of"]]
    model_seed = SEEDS[case["model_seed_of"]]
    rank = case["rank"] or 8
    alpha = case["alpha"] or 2.0 * rank
    seed = 0
    if case["model"] == "attention":
        x, y = make_data(data_seed, (5, 8), case["label"], 4)
    else:
        x, y = make_data(data_seed, (case["sizes"][0],), case["label"], case["sizes"][-1])

    def make_base():
        torch.manual_seed(model_seed)
        if case["model"] == "mlp":
            return MLP(case["sizes"], [ACTS[a]() for a in case["acts"]])
        return TinyAttention(gelu=case["gelu"])

    # The ONNX model is the plain base (OnnxTune adds the adapters); it must be torch's base exactly.
    base = make_base().eval()
    proto = export_torch(base, [torch.from_numpy(x[:3])], ["x"], ["logits"], os.path.join(out_dir, "model.onnx"))
    inits = initializer_map(proto)
    params = OrderedDict((k, v.detach().numpy().copy()) for k, v in base.named_parameters())
    for k, v in params.items():
        assert k in inits and np.array_equal(inits[k], v), f"{name}: initializer {k} differs"
    assert not [k for k, v in inits.items() if v.dtype.kind == "f" and k not in params]

    def make_module():
        return LoraModel(make_base(), case["lora"], rank, alpha, seed)

    module = make_module().eval()
    with torch.no_grad():  # B = 0: the adapted model starts as the base model
        assert torch.equal(module(torch.from_numpy(x)), base(torch.from_numpy(x)))
    initial = OrderedDict((module.onnx_names[k], v.detach().numpy().copy())
                          for k, v in module.named_parameters() if k.startswith("lora."))
    trainable_base = [k for k in params if glob_match(k, case["trainable"])]
    frozen = {k for k in module.onnx_names if k.startswith("base.") and module.onnx_names[k] not in trainable_base}

    opt = case["optimizer"]
    hp = dict(SGD_DEFAULTS if opt == "sgd" else ADAMW_DEFAULTS)
    hp.update(case["hp"])
    feeds = OrderedDict([("x", x)])
    m32, m64 = make_module(), make_module()
    w32, state32, log = train(m32, feeds, y, case["loss"], opt, hp, frozen, None, EPOCHS, BATCH, torch.float32)
    w64, _, _ = train(m64, feeds, y, case["loss"], opt, hp, frozen, None, EPOCHS, BATCH, torch.float64)
    rename = lambda d: OrderedDict((module.onnx_names[k.split(".exp_avg")[0].split(".momentum_buffer")[0]]
                                    + k[len(k.split(".exp_avg")[0].split(".momentum_buffer")[0]):], v)
                                   for k, v in d.items())
    w32, state32, w64 = rename(w32), rename(state32), rename(w64)
    merged32 = m32.merged()
    fp_abs, fp_rel, fp_plain = compare(w64, w32)
    assert fp_rel < RTOL / 10, f"{name}: float32 vs float64 reference differ by {fp_rel}"
    for k in params:
        if k not in trainable_base:
            assert np.array_equal(w32[k], params[k]), f"{name}: frozen {k} moved"
    moved = {k: float(np.max(np.abs(w32[k] - (initial[k] if k in initial else params[k]))))
             for k in list(initial) + trainable_base}
    assert min(moved.values()) > 1e-4, f"{name}: a trainable tensor barely moved: {moved}"

    meta = {"producer": "tests/parity/make_fixtures.py", "case": name}
    write_safetensors(os.path.join(out_dir, "data.safetensors"), OrderedDict([("x", x), ("labels", y)]), meta)
    write_safetensors(os.path.join(out_dir, "initial_adapters.safetensors"), initial,
                      dict(meta, what="lora_A/lora_B before training (OnnxTune's deterministic init, seed 0)"))
    write_safetensors(os.path.join(out_dir, "expected.safetensors"), w32,
                      dict(meta, what="every base parameter and adapter tensor after training, ONNX names"))
    write_safetensors(os.path.join(out_dir, "expected_merged.safetensors"), merged32,
                      dict(meta, what="adapted weights with scale * (B @ A) folded in, each in its own layout"))
    write_safetensors(os.path.join(out_dir, "expected_optimizer_state.safetensors"), state32,
                      dict(meta, what="optimizer state after training, <p><suffix>"))

    art = ["onnxtune", "artifacts", "model.onnx", "--out", "artifacts"]
    for g in case["lora"]:
        art += ["--lora", g]
    if case["rank"] is not None:
        art += ["--lora-rank", str(rank)]
    if case["alpha"] is not None:
        art += ["--lora-alpha", repr(alpha)]
    for g in case["trainable"]:
        art += ["--trainable", g]
    art += ["--loss", case["loss"], "--optimizer", opt, "--lr", repr(hp["lr"])]
    if opt == "sgd" and hp["momentum"] != 0.0:
        art += ["--momentum", repr(hp["momentum"])]
    tr = ["onnxtune", "train", "artifacts", "--data", "data.safetensors", "--out", "trained",
          "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--no-shuffle"]
    ex = ["onnxtune", "export", "trained", "--merged", "merged.onnx", "--adapter", "trained.onnx_adapter",
          "--adapter-base", "adapter_base.onnx"]
    hp_out = {"lr": hp["lr"], "weight_decay": hp["weight_decay"]}
    if opt == "sgd":
        hp_out.update(momentum=hp["momentum"], dampening=hp["dampening"], nesterov=hp["nesterov"])
    else:
        hp_out.update(betas=hp["betas"], eps=hp["eps"], amsgrad=False)
    hp_out["max_grad_norm"] = None
    info = OrderedDict()
    info["case"] = name
    info["description"] = case["description"]
    info["producer"] = {"name": proto.producer_name, "version": proto.producer_version,
                        "exporter": "torch.onnx.export (eval mode), base model without adapters",
                        "opset": proto.opset_import[0].version, "torch": torch.__version__, "onnx": onnx.__version__}
    info["op_types"] = op_types(proto)
    info["inputs"] = [{"name": "x", "dtype": "float32", "shape": ["batch"] + list(x.shape[1:])}]
    info["loss_output"] = "logits"
    info["lora"] = {"targets": case["lora"], "rank": rank, "alpha": alpha, "scale": alpha / rank, "dropout": 0.0,
                    "seed": seed, "init": "lora_A: LoraInitializer (SplitMix64 over SHA-256(\"<seed>:<name>\")), "
                                          "U(-1/sqrt(in), 1/sqrt(in)); lora_B: zeros",
                    "layouts": {w: ("out_in" if module.layout[w] else "in_out") for w in case["lora"]}}
    info["trainable_globs"] = case["trainable"]
    info["trainable_base_parameters"] = trainable_base
    info["adapter_tensors"] = list(initial)
    info["frozen_globs"] = []
    info["frozen_parameters"] = [k for k in params if k not in trainable_base]
    info["loss"] = case["loss"]
    info["optimizer"] = opt
    info["hyperparameters"] = hp_out
    info["epochs"] = EPOCHS
    info["batch_size"] = BATCH
    info["samples"] = N_SAMPLES
    info["shuffle"] = False
    info["steps"] = log["steps"]
    info["epoch_mean_loss"] = log["epoch_mean_loss"]
    info["step_losses"] = log["step_losses"]
    info["commands"] = {"cwd": "this case folder", "artifacts": art, "train": tr, "export": ex,
                        "artifacts_line": " ".join(_quote(a) for a in art),
                        "train_line": " ".join(_quote(a) for a in tr),
                        "export_line": " ".join(_quote(a) for a in ex)}
    info["expected"] = {
        "weights": "expected.safetensors (lora_A/lora_B and base parameters), expected_merged.safetensors",
        "initial_adapters": "initial_adapters.safetensors: what the artifacts' initial checkpoint must hold",
        "optimizer_state": "expected_optimizer_state.safetensors",
        "tolerance": {"rule": "|got - expected| <= rtol * max(|expected|, floor)", "rtol": RTOL, "floor": FLOOR},
        "float64_reference_vs_expected": {"max_abs_diff": fp_abs, "max_rel_diff_with_floor": fp_rel,
                                          "max_plain_rel_diff": fp_plain},
        "max_abs_change": moved,
    }
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


def _quote(a):
    return "'" + a + "'" if any(c in a for c in "*?[ ") else a


# --------------------------------------------------------------------------------------------------- check models
class EmbedMeanLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(dim=1))


class MiscOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.leaky = nn.LeakyReLU(0.1)
        self.prelu = nn.PReLU(num_parameters=1, init=0.2)
        self.drop = nn.Dropout(0.25)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        a = x[:, :3]
        b = x[:, 3:]
        c = torch.cat([a * b, a - b], dim=1)
        d = c.unsqueeze(1).squeeze(1)
        e = self.fc1(d)
        f = torch.sqrt(e.pow(2) + 1.0)
        g = torch.log(torch.exp(-f) + 1.0)
        h = self.leaky(e / (f + 2.0) + g)
        i = self.drop(self.prelu(h))
        j = torch.flatten(i.reshape(-1, 2, 4), 1)
        return self.fc2(j)


def build_check_models():
    os.makedirs(CHECK_DIR, exist_ok=True)
    manifest = []

    def add(fname, model, example, in_names, out_names, note, expect, dynamic_seq=None, training=False,
            compare=True, command_extra=()):
        path = os.path.join(CHECK_DIR, fname)
        torch.manual_seed(7)
        proto = export_torch(model, example, in_names, out_names, path, dynamic_seq, training)
        err = None
        if compare:
            feeds = {n: e.numpy() for n, e in zip(in_names, example)}

            def fn(fd):
                with torch.no_grad():
                    return {out_names[0]: model(*[torch.from_numpy(fd[n]) for n in in_names]).numpy()}
            err = check_graph_matches(proto, fn, feeds)
        manifest.append(OrderedDict(
            file=fname, producer=f"torch.onnx.export {torch.__version__}, opset {OPSET}, "
                                 f"{'training' if training else 'eval'} mode",
            op_types=op_types(proto),
            inputs=[{"name": i.name, "elem_type": TensorProto.DataType.Name(i.type.tensor_type.elem_type),
                     "shape": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]}
                    for i in proto.graph.input],
            outputs=[o.name for o in proto.graph.output],
            initializers={k: list(v.shape) for k, v in initializer_map(proto).items()},
            command=" ".join(["onnxtune", "check", fname] + list(command_extra)),
            expect=expect, note=note, onnx_vs_torch_max_abs_diff=err))
        return proto

    torch.manual_seed(11)
    m = EmbedMeanLinear().eval()
    ids = torch.from_numpy(np.random.default_rng(11).integers(0, 20, size=(3, 6)).astype(np.int64))
    add("embed_mean_linear.onnx", m, [ids], ["input_ids"], ["logits"],
        "nn.Embedding -> mean over seq -> Linear: Gather on an int64 input (its gradient is a row scatter-add), "
        "ReduceMean, Gemm; batch and seq axes are symbolic", "exit 0", dynamic_seq={"input_ids": 1})

    torch.manual_seed(12)
    m = MiscOps().eval()
    x = torch.from_numpy(np.random.default_rng(12).standard_normal((3, 6)).astype(np.float32))
    add("misc_ops_eval.onnx", m, [x], ["x"], ["y"],
        "Slice, Concat, Unsqueeze/Squeeze, Pow(2), Sqrt, Neg, Exp, Log, Div, Sub, LeakyRelu, PRelu, Reshape, "
        "Flatten, Gemm; inputs of Sqrt/Log are kept positive. Exported in eval mode, so nn.Dropout disappears",
        "exit 0")
    proto = add("misc_ops_train_dropout.onnx", MiscOps().train(), [x], ["x"], ["y"],
                "same module exported with training=TrainingMode.TRAINING and do_constant_folding=False: the "
                "exporter emits Dropout(ratio, training_mode=true), so the graph is random; finite differences need "
                "the mask fixed (or Dropout treated as identity for the check)", "see note", training=True,
                compare=False)
    drop = [n for n in proto.graph.node if n.op_type == "Dropout"]
    manifest[-1]["dropout_nodes"] = [{"name": n.name, "inputs": list(n.input), "outputs": list(n.output)}
                                     for n in drop]

    # Opset 11 export: the artifact builder upgrades it to opset 13 (opsets 11 and 12 are upgraded automatically).
    torch.manual_seed(13)
    m = MLP([8, 16, 4], [nn.ReLU()]).eval()
    global OPSET
    saved, OPSET = OPSET, 11
    try:
        add("mlp_opset11.onnx", m, [torch.randn(3, 8)], ["x"], ["logits"],
            "opset 11 export of a small MLP: OnnxTune builds opset-13 graphs and upgrades opset 11 and 12 models to 13 "
            "first (same outputs), so check/artifacts accept it; below opset 11 the error names the opset and how to "
            "upgrade (onnx.version_converter)", "exit 0")
    finally:
        OPSET = saved
    manifest[-1]["producer"] = f"torch.onnx.export {torch.__version__}, opset 11, eval mode"

    # A graph written with onnx.helper exercising broadcasting in the gradient rules.
    rng = np.random.default_rng(14)
    inits = OrderedDict(
        scale=(rng.standard_normal((1, 6)) * 0.5 + 1).astype(np.float32),   # broadcast over batch
        shift=(rng.standard_normal(6) * 0.1).astype(np.float32),            # rank-1 broadcast
        gain=np.array(1.5, dtype=np.float32),                               # scalar
        W=(rng.standard_normal((6, 3)) / math.sqrt(6)).astype(np.float32),
        axes=np.array([1], dtype=np.int64),
    )
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["m"], name="mul_scale"),
        helper.make_node("Add", ["m", "shift"], ["a"], name="add_shift"),
        helper.make_node("Tanh", ["a"], ["t"], name="tanh"),
        helper.make_node("Mul", ["t", "gain"], ["g"], name="mul_gain"),
        helper.make_node("Sub", ["g", "x"], ["s"], name="sub_x"),
        helper.make_node("ReduceSum", ["s", "axes"], ["rs"], name="reduce_sum", keepdims=1),
        helper.make_node("Div", ["s", "rs"], ["d"], name="div_rowsum"),
        helper.make_node("Sigmoid", ["s"], ["sg"], name="sigmoid"),
        helper.make_node("MatMul", ["sg", "W"], ["mm"], name="matmul"),
        helper.make_node("Transpose", ["mm"], ["tt"], name="transpose", perm=[1, 0]),
        helper.make_node("Softmax", ["tt"], ["sm"], name="softmax", axis=0),
        helper.make_node("Transpose", ["sm"], ["y"], name="transpose_back", perm=[1, 0]),
    ]
    graph = helper.make_graph(
        nodes, "helper_broadcast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, producer_name="onnx.helper", producer_version=onnx.__version__,
                              opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 7
    # 'd' is a dead branch (not an output): a gradient walker must ignore it.
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.save(proto, os.path.join(CHECK_DIR, "helper_broadcast.onnx"))
    xs = rng.standard_normal((3, 6)).astype(np.float32)

    def helper_fn(fd):
        t = torch.from_numpy
        s = torch.tanh(t(fd["x"]) * t(inits["scale"]) + t(inits["shift"])) * t(inits["gain"]) - t(fd["x"])
        return {"y": torch.softmax(torch.sigmoid(s) @ t(inits["W"]), dim=1).numpy()}
    err = check_graph_matches(proto, helper_fn, {"x": xs})
    manifest.append(OrderedDict(
        file="helper_broadcast.onnx", producer="onnx.helper, opset 13", op_types=op_types(proto),
        inputs=[{"name": "x", "elem_type": "FLOAT", "shape": ["N", 6]}], outputs=["y"],
        initializers={k: list(v.shape) for k, v in inits.items()},
        command="onnxtune check helper_broadcast.onnx",
        expect="exit 0",
        note="hand-written graph: Mul by [1,6] and by a scalar, Add of a rank-1 [6], Sub, Tanh, Sigmoid, MatMul, "
             "Transpose, Softmax(axis=0) between transposes; a dead ReduceSum/Div branch that feeds no output; "
             "the int64 initializer 'axes' is not a parameter",
        onnx_vs_torch_max_abs_diff=err))

    manifest.append(OrderedDict(
        file="../parity/*/model.onnx",
        note="every parity model is also a check fixture: run 'onnxtune check model.onnx --loss <loss> "
             "[--loss-output logits]' in its folder (see case.json)", expect="exit 0"))
    with open(os.path.join(CHECK_DIR, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _set_root(root):
    global FIXTURES, PARITY_DIR, CHECK_DIR
    FIXTURES = root
    PARITY_DIR = os.path.join(root, "parity")
    CHECK_DIR = os.path.join(root, "check")


def _verify_against(committed, fresh):
    """Compares a fresh generation with the committed fixtures: tensors bit-exact, JSON equal (floats to 1e-12)."""
    problems = []

    def close(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-12 * max(1, abs(b))
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        return a == b

    for root, _, files in os.walk(fresh):
        for fn in files:
            rel = os.path.relpath(os.path.join(root, fn), fresh)
            old = os.path.join(committed, rel)
            if not os.path.exists(old):
                problems.append(f"missing in committed fixtures: {rel}")
            elif fn.endswith(".safetensors"):
                a, b = read_safetensors(old), read_safetensors(os.path.join(root, fn))
                if list(a) != list(b) or any(not np.array_equal(a[k], b[k]) for k in a):
                    problems.append(f"tensors differ: {rel}")
            elif fn.endswith(".json"):
                with open(old) as f1, open(os.path.join(root, fn)) as f2:
                    if not close(json.load(f1), json.load(f2)):
                        problems.append(f"json differs: {rel}")
            elif fn.endswith(".onnx"):
                a, b = onnx.load(old), onnx.load(os.path.join(root, fn))
                if a.graph.SerializeToString() != b.graph.SerializeToString():
                    problems.append(f"graph differs: {rel}")
    return problems


def main(argv):
    import argparse
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=FIXTURES, help="fixtures root (default: tests/fixtures of this repo)")
    ap.add_argument("--verify", action="store_true",
                    help="generate into a temporary folder and compare with the fixtures under --out")
    args = ap.parse_args(argv)
    committed = os.path.abspath(args.out)
    tmp = tempfile.mkdtemp(prefix="onnxtune-fixtures-") if args.verify else None
    _set_root(tmp or committed)
    for d in (PARITY_DIR, CHECK_DIR):
        if os.path.isdir(d):
            shutil.rmtree(d)
    infos = [build_case(c) for c in CASES]
    lora_infos = [build_lora_case(c) for c in LORA_CASES]
    manifest = build_check_models()
    for info in infos:
        fp = info["expected"]["float64_reference_vs_expected"]["max_rel_diff_with_floor"]
        fpp = info["expected"]["float64_reference_vs_expected"]["max_plain_rel_diff"]
        print(f"{info['case']:30s} loss {info['epoch_mean_loss'][0]:.4f}->{info['epoch_mean_loss'][-1]:.4f}  "
              f"clipped={info['clipped_steps']:2d}  fp32-vs-fp64 rel={fp:.2e} plain={fpp:.1e}  ops={','.join(info['op_types'])}")
    for info in lora_infos:
        fp = info["expected"]["float64_reference_vs_expected"]["max_rel_diff_with_floor"]
        print(f"{info['case']:30s} loss {info['epoch_mean_loss'][0]:.4f}->{info['epoch_mean_loss'][-1]:.4f}  "
              f"fp32-vs-fp64 rel={fp:.2e}  lora={','.join(info['lora']['targets'])} r={info['lora']['rank']}")
    for m in manifest[:-1]:
        print(f"check/{m['file']:30s} ops={','.join(m['op_types'])}")
    total = 0
    for root, _, files in os.walk(FIXTURES):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print(f"total fixture size: {total} bytes")
    if tmp:
        problems = _verify_against(committed, tmp)
        shutil.rmtree(tmp)
        for p in problems:
            print("DRIFT:", p)
        print("verify:", "fixtures match a fresh generation" if not problems else f"{len(problems)} differences")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
