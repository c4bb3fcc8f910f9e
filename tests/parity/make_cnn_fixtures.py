#!/usr/bin/python3
"""Generates the PyTorch CNN parity cases tests/fixtures/parity/cnn_* (issue 13; see tests/parity/README.md).

    /usr/bin/python3 tests/parity/make_cnn_fixtures.py            # rewrites tests/fixtures/parity/cnn_*
    /usr/bin/python3 tests/parity/make_cnn_fixtures.py --verify   # generates into a temp folder and compares

Same layout and training loop as make_fixtures.py (whose helpers it imports), plus BatchNormalization: the
networks train in model.train() (batch statistics, running mean/var updated with momentum 0.1 and the unbiased
variance), frozen blocks run in eval mode with requires_grad False, and expected.safetensors holds the running
statistics next to the weights. Everything is seeded and runs on one torch thread.
"""
import copy
import json
import math
import os
import shutil
import sys
from collections import OrderedDict

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
import onnx_eval  # noqa: E402

OPSET = 14
N_SAMPLES, BATCH, EPOCHS = mf.N_SAMPLES, mf.BATCH, mf.EPOCHS
RTOL, FLOOR = mf.RTOL, mf.FLOOR
PRODUCER = "tests/parity/make_cnn_fixtures.py"

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------- NumPy CNN ops
# onnx_eval.py covers the MLP/attention ops; the CNN ops are evaluated here (float64) so the exported graphs can be
# checked against the torch forward without onnxruntime.
def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _windows(x, kernel, strides, pads, dilations, fill):
    """Yields, per kernel offset, the strided view of the padded input (N, C, *out)."""
    sp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + sp]) for i in range(sp)], constant_values=fill)
    out = [(xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(sp)]
    for idx in np.ndindex(*kernel):
        sl = tuple(slice(idx[i] * dilations[i], idx[i] * dilations[i] + strides[i] * (out[i] - 1) + 1, strides[i])
                   for i in range(sp))
        yield idx, xp[(slice(None), slice(None)) + sl], out


def _conv(x, w, b, a):
    sp = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = a.get("strides", [1] * sp)
    pads = a.get("pads", [0] * 2 * sp)
    dil = a.get("dilations", [1] * sp)
    group = a.get("group", 1)
    assert a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    y = None
    for idx, patch, out in _windows(x.astype(np.float64), kernel, strides, pads, dil, 0.0):
        if y is None:
            y = np.zeros((n, m) + tuple(out))
        for g in range(group):
            wg = w[(slice(g * mg, (g + 1) * mg), slice(None)) + idx].astype(np.float64)
            y[:, g * mg:(g + 1) * mg] += np.einsum("nc...,mc->nm...", patch[:, g * cg:(g + 1) * cg], wg)
    if b is not None:
        y += b.reshape((1, m) + (1,) * sp)
    return y.astype(x.dtype)


def _pool(op, x, a):
    sp = x.ndim - 2
    kernel = a["kernel_shape"]
    strides = a.get("strides", [1] * sp)
    pads = a.get("pads", [0] * 2 * sp)
    dil = a.get("dilations", [1] * sp)
    assert not a.get("ceil_mode", 0)
    if op == "MaxPool":
        wins = [p for _, p, _ in _windows(x, kernel, strides, pads, dil, -np.inf)]
        return np.max(np.stack(wins), axis=0).astype(x.dtype)
    wins = [p for _, p, _ in _windows(x.astype(np.float64), kernel, strides, pads, dil, 0.0)]
    total = np.sum(np.stack(wins), axis=0)
    if a.get("count_include_pad", 0):
        count = float(np.prod(kernel))
    else:
        ones = np.ones((1, 1) + x.shape[2:])
        count = np.sum(np.stack([p for _, p, _ in _windows(ones, kernel, strides, pads, dil, 0.0)]), axis=0)
    return (total / count).astype(x.dtype)


def _batch_norm(inputs, a):
    x, scale, bias, mean, var = inputs[:5]
    axes = (0,) + tuple(range(2, x.ndim))
    if a.get("training_mode", 0):
        mean = x.astype(np.float64).mean(axis=axes)
        var = x.astype(np.float64).var(axis=axes)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + a.get("epsilon", 1e-5))
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


_base_run_node = onnx_eval.run_node


def _run_node(node, inputs):
    op, a = node.op_type, _attrs(node)
    if op == "Conv":
        return [_conv(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, a)]
    if op in ("MaxPool", "AveragePool"):
        return [_pool(op, inputs[0], a)]
    if op == "GlobalAveragePool":
        return [inputs[0].mean(axis=tuple(range(2, inputs[0].ndim)), keepdims=True)]
    if op == "BatchNormalization":
        return [_batch_norm(inputs, a)]
    if op == "Pad":
        assert a.get("mode", b"constant") in (b"constant", "constant")
        pads = [int(v) for v in inputs[1]]
        r = inputs[0].ndim
        value = inputs[2].item() if len(inputs) > 2 and inputs[2] is not None else 0
        return [np.pad(inputs[0], [(pads[i], pads[i + r]) for i in range(r)], constant_values=value)]
    if op == "Clip":
        lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else -np.inf
        hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.inf
        return [np.clip(inputs[0], lo, hi).astype(inputs[0].dtype)]
    return _base_run_node(node, inputs)


onnx_eval.run_node = _run_node


# --------------------------------------------------------------------------------------------------- models
def conv_bn(cin, cout, k, stride=1, groups=1, act=nn.ReLU):
    """Conv (no bias: BN follows, as in torchvision) -> BatchNorm2d -> activation."""
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class ConvBnNet(nn.Module):
    """a: Conv-BN-ReLU, MaxPool, strided Conv-BN-ReLU, global average pool, Linear."""

    def __init__(self):
        super().__init__()
        self.block1 = conv_bn(3, 8, 3)
        self.pool = nn.MaxPool2d(2)
        self.block2 = conv_bn(8, 8, 3, stride=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.block2(self.pool(self.block1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block with expansion 3: 1x1 expand-BN-ReLU6, 3x3 depthwise-BN-ReLU6, 1x1 project-BN, + x."""

    def __init__(self, c, expand):
        super().__init__()
        h = c * expand
        self.conv = nn.Sequential(conv_bn(c, h, 1, act=nn.ReLU6), conv_bn(h, h, 3, groups=h, act=nn.ReLU6),
                                  conv_bn(h, c, 1, act=None))

    def forward(self, x):
        return x + self.conv(x)


class MobileBlockNet(nn.Module):
    """b: stem Conv-BN-ReLU6, one inverted residual block, global average pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, 3, act=nn.ReLU6)
        self.block = InvertedResidual(8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.block(self.stem(x)), 1), 1))


class Conv1dNet(nn.Module):
    """d: Conv1d (stride 2, dilation 2, padding 2)-BN1d-ReLU, MaxPool1d (padding), Conv1d-ReLU, two AvgPool1d, Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 3, stride=2, padding=2, dilation=2, bias=False)
        self.bn1 = nn.BatchNorm1d(6)
        self.pool1 = nn.MaxPool1d(3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(6, 6, 3, padding=1)
        self.pool2 = nn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False)
        self.pool3 = nn.AvgPool1d(3, stride=2, padding=1)  # count_include_pad=True (PyTorch's default): Pad + pool
        self.fc = nn.Linear(18, 4)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool3(self.pool2(F.relu(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


MODELS = {"convbn": (ConvBnNet, (3, 8, 8)), "mobile": (MobileBlockNet, (3, 8, 8)), "conv1d": (Conv1dNet, (2, 24))}

CASES = [
    dict(name="cnn_a_convbn_adamw", model="convbn", seed=101, export="eval",
         description="Conv-BN2d(train mode)-ReLU, MaxPool, strided Conv-BN-ReLU, global avg pool, Linear; AdamW "
                     "lr 1e-2; BN batch statistics and running mean/var updates",
         optimizer="adamw", hp=dict(lr=1e-2)),
    dict(name="cnn_a2_convbn_adamw_training_export", model="convbn", seed=101, export="training",
         description="case a's module and data exported with training=TrainingMode.TRAINING (BatchNormalization "
                     "training_mode=1 with three outputs, no constant folding); the export's traced forward has already "
                     "moved the running statistics once, so it starts from those",
         optimizer="adamw", hp=dict(lr=1e-2)),
    dict(name="cnn_b_inverted_residual_sgd_momentum", model="mobile", seed=102, export="eval",
         description="MobileNetV2-style stem + inverted residual (1x1 expand, 3x3 depthwise groups=24, 1x1 project, "
                     "ReLU6 as Clip(0, 6), BN everywhere, residual Add); SGD lr 0.05 momentum 0.9 wd 1e-3",
         optimizer="sgd", hp=dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    dict(name="cnn_c_frozen_block_adamw", model="convbn", seed=103, export="training", frozen_globs=["block1.*"],
         description="case a's network with --frozen 'block1.*', exported in training mode: the frozen block's BN "
                     "runs on its running statistics and keeps them (PyTorch: block1.eval(), requires_grad False); "
                     "block2's BN trains with batch statistics; AdamW lr 1e-2",
         optimizer="adamw", hp=dict(lr=1e-2)),
    dict(name="cnn_d_conv1d_pools_sgd", model="conv1d", seed=104, export="eval",
         description="Conv1d stride 2 / dilation 2 / padding 2, BatchNorm1d, MaxPool1d(3, 2, padding 1), Conv1d, "
                     "AvgPool1d(3, 1, padding 1, count_include_pad False), AvgPool1d(3, 2, padding 1) (exported as Pad + "
                     "AveragePool), Linear; SGD lr 0.05 momentum 0.5",
         optimizer="sgd", hp=dict(lr=0.05, momentum=0.5)),
]


def make_module(case, state=None):
    """The case's module, seeded, with BN affine parameters and running statistics drawn away from 1/0: the
    exporter deduplicates initializers with equal values (fresh BN layers would share one weight tensor)."""
    torch.manual_seed(case["seed"])
    m = MODELS[case["model"]][0]()
    g = torch.Generator().manual_seed(case["seed"] + 7)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                mod.weight.copy_(0.75 + 0.5 * torch.rand(c, generator=g))
                mod.bias.copy_(0.2 * torch.randn(c, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.75 + 0.5 * torch.rand(c, generator=g))
    if state is not None:
        m.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    return m


def state_arrays(module):
    """Parameters and BN running statistics (num_batches_tracked is irrelevant with a fixed momentum)."""
    return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in module.state_dict().items()
                       if not k.endswith("num_batches_tracked"))


def frozen_modules(module, frozen):
    """Submodules all of whose parameters are frozen: PyTorch's frozen block runs in eval mode."""
    out = []
    for name, mod in module.named_modules():
        ps = [name + "." + p if name else p for p, _ in mod.named_parameters()]
        if name and ps and all(p in frozen for p in ps):
            out.append(mod)
    return out


def train(module, x, labels, opt_name, hp, frozen, dtype):
    """make_fixtures.train's loop (DataLoader(shuffle=False)), with frozen BN layers kept in eval mode."""
    module = module.to(dtype)
    for name, p in module.named_parameters():
        p.requires_grad_(name not in frozen)
    params = [p for n, p in module.named_parameters() if n not in frozen]
    if opt_name == "sgd":
        opt = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                              weight_decay=hp["weight_decay"], nesterov=hp["nesterov"])
    else:
        opt = torch.optim.AdamW(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                                weight_decay=hp["weight_decay"])
    xs = torch.from_numpy(x).to(dtype)
    y = torch.from_numpy(labels)
    log = {"epoch_mean_loss": [], "epoch_sample_weighted_loss": [], "step_losses": [], "grad_norms": [], "steps": 0}
    module.train()
    for m in frozen_modules(module, frozen):
        m.eval()
    for _ in range(EPOCHS):
        losses, weights = [], []
        for start in range(0, N_SAMPLES, BATCH):
            sl = slice(start, min(start + BATCH, N_SAMPLES))
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(xs[sl]), y[sl])
            loss.backward()
            log["grad_norms"].append(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)).item())
            opt.step()
            log["steps"] += 1
            losses.append(loss.item())
            weights.append(sl.stop - sl.start)
            log["step_losses"].append(loss.item())
        log["epoch_mean_loss"].append(float(np.mean(losses)))
        log["epoch_sample_weighted_loss"].append(float(np.dot(losses, weights) / sum(weights)))
    module.eval()
    state = OrderedDict()
    for k, p in module.named_parameters():
        if k in frozen:
            continue
        st = opt.state[p]
        if opt_name == "sgd" and st.get("momentum_buffer") is not None:
            state[k + ".momentum_buffer"] = st["momentum_buffer"].detach().cpu().numpy().copy()
        if opt_name == "adamw":
            state[k + ".exp_avg"] = st["exp_avg"].detach().cpu().numpy().copy()
            state[k + ".exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().numpy().copy()
    with torch.no_grad():
        eval_logits = module(xs).detach().cpu().numpy().astype(np.float32)
    return state_arrays(module), state, log, eval_logits


def export(module, x, path, training):
    module.train(training)
    torch.onnx.export(
        module, (torch.from_numpy(x[:3]),), path, input_names=["x"], output_names=["logits"], opset_version=OPSET,
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=not training,
        export_params=True, keep_initializers_as_inputs=False,
        # PRESERVE on an eval-mode module: the exporter's EVAL mode folds every BatchNorm into the Conv before it
        # (renamed onnx::Conv_N weights, no BatchNormalization left), which is a different model to train.
        training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.PRESERVE)
    module.eval()
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    return m


def build_case(case, parity_dir):
    name = case["name"]
    out_dir = os.path.join(parity_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    x, y = mf.make_data(case["seed"], MODELS[case["model"]][1], "class", 4)
    training_export = case["export"] == "training"
    module = make_module(case).eval()
    proto = export(module, x, os.path.join(out_dir, "model.onnx"), training_export)

    inits = mf.initializer_map(proto)
    # A training-mode export traces the module in train mode, and that forward updates the BN running statistics
    # (once, on the example batch) before they are written. The exported values are the starting point.
    start = state_arrays(module)
    if training_export:
        start_torch = make_module(case).eval()
        moved_by_export = [k for k in start if not np.array_equal(start[k], state_arrays(start_torch)[k])]
        assert moved_by_export and all("running" in k for k in moved_by_export), moved_by_export
    params = OrderedDict((k, v.detach().numpy().copy()) for k, v in module.named_parameters())
    for k, v in start.items():
        assert k in inits, f"{name}: {k} is not an ONNX initializer (have {list(inits)})"
        assert inits[k].shape == v.shape and np.array_equal(inits[k], v), f"{name}: initializer {k} differs"
    float_non_params = [k for k, v in inits.items() if v.dtype.kind == "f" and k not in start]
    assert not float_non_params, f"{name}: float initializers that are not torch state: {float_non_params}"
    bn_nodes = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    for n in bn_nodes:
        tm = [a.i for a in n.attribute if a.name == "training_mode"]
        assert tm == [1 if training_export else 0], f"{name}: {n.name} training_mode {tm}"
    frozen = [k for k in params if mf.glob_match(k, case.get("frozen_globs", []))]

    # The exported graph computes what the module computes (BN in the export's mode).
    ref = copy.deepcopy(module).train(training_export)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    got = onnx_eval.run_model(proto, {"x": x})["logits"]
    eval_err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert eval_err <= 1e-4 * max(1.0, float(np.max(np.abs(want)))), f"{name}: ONNX vs torch {eval_err}"

    opt = case["optimizer"]
    hp = dict(mf.SGD_DEFAULTS if opt == "sgd" else mf.ADAMW_DEFAULTS)
    hp.update(case["hp"])
    w32, state32, log, eval_logits = train(make_module(case, start), x, y, opt, hp, set(frozen), torch.float32)
    w64, _, _, _ = train(make_module(case, start), x, y, opt, hp, set(frozen), torch.float64)
    fp_abs, fp_rel, fp_plain = mf.compare(w64, w32)
    assert fp_rel < RTOL / 10, f"{name}: float32 vs float64 reference differ by {fp_rel} (too sensitive a case)"

    running = [k for k in start if k not in params]
    frozen_running = [k for k in running if mf.glob_match(k, case.get("frozen_globs", []))]
    for k in frozen + frozen_running:
        assert np.array_equal(w32[k], start[k]), f"{name}: frozen {k} moved"
    moved = {k: float(np.max(np.abs(w32[k] - start[k]))) for k in start if k not in frozen + frozen_running}
    assert min(moved.values()) > 1e-4, f"{name}: a trained tensor barely moved: {moved}"

    meta = {"producer": PRODUCER, "case": name}
    data = OrderedDict([("x", x), ("labels", y)])
    mf.write_safetensors(os.path.join(out_dir, "data.safetensors"), data, meta)
    mf.write_safetensors(os.path.join(out_dir, "expected.safetensors"), w32,
                         dict(meta, what="parameters and BN running_mean/running_var after training"))
    mf.write_safetensors(os.path.join(out_dir, "expected_optimizer_state.safetensors"), state32,
                         dict(meta, what="optimizer state after training, named <p><suffix> as in the checkpoint"))
    mf.write_safetensors(os.path.join(out_dir, "expected_eval_logits.safetensors"), OrderedDict(logits=eval_logits),
                         dict(meta, what="the trained module in eval mode (running statistics) on all of x"))
    for fname, want_t in (("data.safetensors", data), ("expected.safetensors", w32)):
        back = mf.read_safetensors(os.path.join(out_dir, fname))
        assert list(back) == list(want_t) and all(np.array_equal(back[k], want_t[k]) for k in want_t)

    art = ["onnxtune", "artifacts", "model.onnx", "--out", "artifacts"]
    for gl in case.get("frozen_globs", []):
        art += ["--frozen", gl]
    art += ["--loss", "cross-entropy", "--optimizer", opt, "--lr", repr(hp["lr"])]
    defaults = mf.SGD_DEFAULTS if opt == "sgd" else mf.ADAMW_DEFAULTS
    if hp["weight_decay"] != defaults["weight_decay"]:
        art += ["--weight-decay", repr(hp["weight_decay"])]
    if opt == "sgd" and hp["momentum"] != 0.0:
        art += ["--momentum", repr(hp["momentum"])]
    tr = ["onnxtune", "train", "artifacts", "--data", "data.safetensors", "--out", "trained",
          "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--no-shuffle"]
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
                        "exporter": "torch.onnx.export (training=TRAINING, no constant folding)" if training_export
                        else "torch.onnx.export (eval-mode module, training=PRESERVE, constant folding)",
                        "opset": proto.opset_import[0].version, "torch": torch.__version__, "onnx": onnx.__version__}
    info["op_types"] = mf.op_types(proto)
    info["inputs"] = [{"name": "x", "dtype": "float32", "shape": ["batch"] + list(x.shape[1:])}]
    info["outputs"] = ["logits"]
    info["loss_output"] = "logits"
    info["parameters"] = [{"name": k, "shape": list(v.shape), "trainable": k not in frozen} for k, v in params.items()]
    info["parameter_name_mapping"] = "identity: every torch parameter and buffer name is the ONNX initializer name"
    info["float_initializers_not_parameters"] = running
    info["batch_norm"] = {
        "layers": [{"node": n.name, "scale": n.input[1], "running_mean": n.input[3], "running_var": n.input[4],
                    "export_training_mode": 1 if training_export else 0,
                    "trains_with_batch_statistics": n.input[3] not in frozen_running} for n in bn_nodes],
        "pytorch_momentum": 0.1,
        "running_var": "unbiased batch variance (n / (n - 1)); normalisation uses the biased one",
        "frozen_layers": "eval mode: normalise with the running statistics and leave them unchanged",
    }
    info["trainable_globs"] = None
    info["frozen_globs"] = case.get("frozen_globs", [])
    info["frozen_parameters"] = frozen
    info["frozen_running_statistics"] = frozen_running
    info["loss"] = "cross-entropy"
    info["loss_reduction"] = "mean"
    info["ignore_index"] = -100
    info["ignored_labels"] = 0
    info["label"] = "labels"
    info["label_dtype"] = "int64"
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
    info["clipped_steps"] = 0
    info["commands"] = {"cwd": "this case folder", "artifacts": art, "train": tr,
                        "artifacts_line": " ".join(mf._quote(a) for a in art),
                        "train_line": " ".join(mf._quote(a) for a in tr)}
    info["expected"] = {
        "weights": "expected.safetensors: every parameter and BN running_mean/running_var after training, keyed by "
                   "ONNX initializer name; compare with trained/model.onnx initializers",
        "optimizer_state": "expected_optimizer_state.safetensors",
        "eval_logits": "expected_eval_logits.safetensors: trained/model.onnx on data x (BN on running statistics)",
        "tolerance": {"rule": "|got - expected| <= rtol * max(|expected|, floor)", "rtol": RTOL, "floor": FLOOR},
        "float64_reference_vs_expected": {"max_abs_diff": fp_abs, "max_rel_diff_with_floor": fp_rel,
                                          "max_plain_rel_diff": fp_plain},
        "onnx_graph_vs_torch_forward_max_abs_diff": eval_err,
        "max_abs_change": moved,
    }
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


# --------------------------------------------------------------------------------------------------- check models
# ONNX's backend test data "pytorch-converted" (test_Conv2d, test_Conv1d_stride, test_Conv2d_depthwise,
# test_BatchNorm2d_eval, ...) was exported from the module tests of torch/testing/_internal/common_nn.py; it is not
# installed here, so the same modules and input sizes (copied from torch 1.13's common_nn.py) are exported again at
# opset 14. Names follow ONNX's test folders without the test_ prefix; the "_eval" BatchNorm cases are the module in
# eval mode. BN affine parameters and running statistics are drawn away from ones/zeros (the exporter would merge
# equal initializers).
PYTORCH_CONVERTED = [
    ("AvgPool1d", lambda: nn.AvgPool1d(2), (2, 3, 6)),
    ("AvgPool1d_stride", lambda: nn.AvgPool1d((2,), (2,)), (2, 3, 6)),
    ("AvgPool2d", lambda: nn.AvgPool2d((2, 2)), (2, 3, 6, 6)),
    ("AvgPool2d_stride", lambda: nn.AvgPool2d((2, 2), (2, 2)), (2, 3, 6, 6)),
    ("AvgPool3d", lambda: nn.AvgPool3d((2, 2, 2)), (2, 3, 4, 4, 4)),
    ("AvgPool3d_stride", lambda: nn.AvgPool3d(2, (2, 2, 2)), (2, 3, 5, 5, 5)),
    ("AvgPool3d_stride1_pad0_gpu_input", lambda: nn.AvgPool3d(3, 1, 0), (2, 3, 4, 4, 4)),
    ("BatchNorm1d_3d_input_eval", lambda: nn.BatchNorm1d(5), (4, 5, 3)),
    ("BatchNorm2d_eval", lambda: nn.BatchNorm2d(3), (2, 3, 6, 6)),
    ("BatchNorm2d_momentum_eval", lambda: nn.BatchNorm2d(3, 0.001, 0.8), (2, 3, 6, 6)),
    ("BatchNorm3d_eval", lambda: nn.BatchNorm3d(3), (2, 3, 4, 4, 4)),
    ("BatchNorm3d_momentum_eval", lambda: nn.BatchNorm3d(3, 0.001, 0.7), (2, 3, 4, 4, 4)),
    ("Conv1d", lambda: nn.Conv1d(4, 5, 3), (2, 4, 10)),
    ("Conv1d_dilated", lambda: nn.Conv1d(4, 5, kernel_size=3, dilation=2), (2, 4, 10)),
    ("Conv1d_groups", lambda: nn.Conv1d(4, 6, kernel_size=3, groups=2), (2, 4, 6)),
    ("Conv1d_pad1", lambda: nn.Conv1d(4, 5, 3, 1, 1), (2, 4, 10)),
    ("Conv1d_pad1size1", lambda: nn.Conv1d(4, 4, 3, 1, 1), (1, 4, 1)),
    ("Conv1d_pad2", lambda: nn.Conv1d(4, 5, 5, 1, 2), (2, 4, 10)),
    ("Conv1d_pad2size1", lambda: nn.Conv1d(4, 4, 5, 1, 2), (1, 4, 1)),
    ("Conv1d_stride", lambda: nn.Conv1d(4, 5, 3, 2), (2, 4, 10)),
    ("Conv2d", lambda: nn.Conv2d(3, 4, (3, 2)), (2, 3, 7, 5)),
    ("Conv2d_depthwise", lambda: nn.Conv2d(4, 4, (3, 3), groups=4), (2, 4, 6, 6)),
    ("Conv2d_depthwise_padded", lambda: nn.Conv2d(4, 4, (3, 3), padding=(1, 1), groups=4), (2, 4, 6, 6)),
    ("Conv2d_depthwise_strided", lambda: nn.Conv2d(4, 4, (3, 3), stride=(2, 2), groups=4), (2, 4, 6, 6)),
    ("Conv2d_depthwise_with_multiplier", lambda: nn.Conv2d(4, 8, (3, 3), groups=4), (2, 4, 6, 6)),
    ("Conv2d_dilated", lambda: nn.Conv2d(3, 2, (3, 3), (2, 2), (1, 1), (2, 2)), (2, 3, 8, 8)),
    ("Conv2d_groups", lambda: nn.Conv2d(4, 6, (3, 2), groups=2), (2, 4, 6, 5)),
    ("Conv2d_no_bias", lambda: nn.Conv2d(3, 4, (3, 2), 1, 0, 1, 1, False), (2, 3, 6, 5)),
    ("Conv2d_padding", lambda: nn.Conv2d(3, 4, (3, 3), (2, 2), (1, 1)), (2, 3, 6, 6)),
    ("Conv2d_strided", lambda: nn.Conv2d(3, 4, (3, 3), (2, 2)), (2, 3, 6, 6)),
    ("Conv3d", lambda: nn.Conv3d(2, 3, (2, 3, 2)), (1, 2, 4, 5, 4)),
    ("Conv3d_dilated", lambda: nn.Conv3d(3, 4, kernel_size=2, dilation=2), (2, 3, 5, 5, 5)),
    ("Conv3d_dilated_strided", lambda: nn.Conv3d(3, 4, kernel_size=2, dilation=2, stride=2), (2, 3, 5, 5, 5)),
    ("Conv3d_groups", lambda: nn.Conv3d(2, 4, kernel_size=3, groups=2), (1, 2, 4, 5, 4)),
    ("Conv3d_no_bias", lambda: nn.Conv3d(2, 3, (2, 3, 4), 1, 0, 1, 1, False), (1, 2, 3, 4, 5)),
    ("Conv3d_stride", lambda: nn.Conv3d(3, 4, 2, 2), (2, 3, 5, 5, 5)),
    ("Conv3d_stride_padding", lambda: nn.Conv3d(3, 4, 2, 2, 1), (2, 3, 5, 5, 5)),
    ("ConvTranspose2d", lambda: nn.ConvTranspose2d(3, 4, 3, (3, 2), 1, (1, 1)), (1, 3, 7, 6)),
    ("ConvTranspose2d_no_bias", lambda: nn.ConvTranspose2d(3, 4, 3, (2, 3), 1, (1, 1), 1, False), (1, 3, 6, 7)),
    ("MaxPool1d", lambda: nn.MaxPool1d(4), (2, 10, 4)),
    ("MaxPool1d_stride", lambda: nn.MaxPool1d(4, 4), (2, 10, 4)),
    ("MaxPool2d", lambda: nn.MaxPool2d((3, 3), (2, 2), (1, 1)), (1, 3, 7, 7)),
    ("MaxPool3d", lambda: nn.MaxPool3d((2, 2, 2)), (2, 3, 5, 5, 5)),
    ("MaxPool3d_stride", lambda: nn.MaxPool3d(2, (2, 2, 2)), (2, 3, 5, 5, 5)),
    ("MaxPool3d_stride_padding", lambda: nn.MaxPool3d(2, 2, (1, 1, 1)), (2, 3, 5, 5, 5)),
]


def randomize_bn(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                mod.weight.copy_(0.75 + 0.5 * torch.rand(c, generator=g))
                mod.bias.copy_(0.2 * torch.randn(c, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.75 + 0.5 * torch.rand(c, generator=g))
    return module


def narrow_resnet18(div=16, num_classes=10):
    """ResNet-18's topology (torchvision's ResNet and BasicBlock, layers [2, 2, 2, 2], 7x7/2 stem, max pool) at
    1/div of its widths, so the committed file stays small; the full-width export has the same op types."""
    from torchvision.models.resnet import BasicBlock, ResNet

    class NarrowResNet(ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:
                self.inplanes = 64 // div
            return super()._make_layer(block, planes // div, blocks, stride, dilate)

    torch.manual_seed(0)
    m = NarrowResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64 // div, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(64 // div)
    m.fc = nn.Linear(512 // div, num_classes)
    return m


def torchvision_models(small=True):
    import torchvision
    from torchvision.models import efficientnet as tv_eff
    torch.manual_seed(0)
    if small:
        mobilenet = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10)
        resnet = narrow_resnet18()
        setting, last = tv_eff._efficientnet_conf("efficientnet_b0", width_mult=0.1, depth_mult=1.0)
        torch.manual_seed(0)
        effnet = tv_eff.EfficientNet(setting, 0.2, last_channel=last, num_classes=10)
        size = 32
    else:
        mobilenet = torchvision.models.mobilenet_v2()
        resnet = torchvision.models.resnet18()
        effnet = torchvision.models.efficientnet_b0()
        size = 224
    return [("mobilenet_v2", mobilenet, size), ("resnet18", resnet, size), ("efficientnet_b0", effnet, size)], size


def export_check_model(module, shape, path, preserve_bn=True, dynamic_batch=False):
    module.eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    dyn = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(module, (x,), path, input_names=["x"], output_names=["y"], opset_version=OPSET,
                      dynamic_axes=dyn, do_constant_folding=True, export_params=True,
                      keep_initializers_as_inputs=False,
                      training=torch.onnx.TrainingMode.PRESERVE if preserve_bn else torch.onnx.TrainingMode.EVAL)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    return m, x


def build_check_models(check_dir):
    out = os.path.join(check_dir, "cnn")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "pytorch_converted"))
    os.makedirs(os.path.join(out, "torchvision"))
    manifest = []
    for i, (name, ctor, shape) in enumerate(PYTORCH_CONVERTED):
        torch.manual_seed(200 + i)
        module = randomize_bn(ctor(), 300 + i).eval()
        rel = f"pytorch_converted/{name}.onnx"
        proto, x = export_check_model(module, shape, os.path.join(out, rel), preserve_bn=True)
        ops = mf.op_types(proto)
        if "ConvTranspose" not in ops:  # onnx_eval has no ConvTranspose
            with torch.no_grad():
                want = module(x).numpy()
            got = onnx_eval.run_model(proto, {"x": x.numpy()})["y"]
            assert np.max(np.abs(got - want)) <= 1e-4, name
        params = [i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
        manifest.append(OrderedDict(file=rel, source="torch/testing/_internal/common_nn.py (torch 1.13) module test, "
                                                     "as in onnx/backend/test/data/pytorch-converted/test_" + name,
                                    op_types=ops, input_shape=list(shape), float_initializers=params,
                                    command=f"onnxtune check {rel}",
                                    expect="exit 0" if params else "no parameters: check the input gradient "
                                                                   "(the C# test makes x a parameter)"))
    models, size = torchvision_models(small=True)
    for name, module, sz in models:
        randomize_bn(module, 7)
        rel = f"torchvision/{name}_small.onnx"
        proto, x = export_check_model(module, (2, 3, sz, sz), os.path.join(out, rel), preserve_bn=True,
                                      dynamic_batch=True)
        if name != "efficientnet_b0":  # Sigmoid/Mul are in onnx_eval; the SE block's Conv too, kept for all
            pass
        n_params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
        manifest.append(OrderedDict(file=rel, source=f"torchvision {__import__('torchvision').__version__} "
                                    + {"mobilenet_v2": "mobilenet_v2(width_mult=0.25, num_classes=10)",
                                       "resnet18": "ResNet(BasicBlock, [2, 2, 2, 2]) at 1/16 width, num_classes=10",
                                       "efficientnet_b0": "EfficientNet(b0 setting, width_mult=0.1, depth_mult=1.0), "
                                                          "num_classes=10"}[name]
                                    + f", random init, eval mode, 2x3x{sz}x{sz} with a symbolic batch; exported "
                                      "with training=PRESERVE (the default EVAL export folds BN into Conv)",
                                    op_types=mf.op_types(proto), input_shape=["batch", 3, sz, sz],
                                    float_values=n_params, command=f"onnxtune check {rel}", expect="exit 0"))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def main(argv):
    import argparse
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=mf.FIXTURES, help="fixtures root (default: tests/fixtures of this repo)")
    ap.add_argument("--verify", action="store_true", help="generate into a temp folder and compare with --out")
    args = ap.parse_args(argv)
    committed = os.path.abspath(args.out)
    tmp = tempfile.mkdtemp(prefix="onnxtune-cnn-fixtures-") if args.verify else None
    parity_dir = os.path.join(tmp or committed, "parity")
    for c in CASES:
        d = os.path.join(parity_dir, c["name"])
        if os.path.isdir(d):
            shutil.rmtree(d)
    for c in CASES:
        info = build_case(c, parity_dir)
        fp = info["expected"]["float64_reference_vs_expected"]
        print(f"{info['case']:40s} loss {info['epoch_mean_loss'][0]:.4f}->{info['epoch_mean_loss'][-1]:.4f}  "
              f"fp32-vs-fp64 rel={fp['max_rel_diff_with_floor']:.2e}  ops={','.join(info['op_types'])}")
    manifest = build_check_models(os.path.join(tmp or committed, "check"))
    print(f"check/cnn: {len(manifest)} models")
    if tmp:
        problems = mf._verify_against(os.path.join(committed, "parity"), parity_dir)
        problems += mf._verify_against(os.path.join(committed, "check", "cnn"), os.path.join(tmp, "check", "cnn"))
        shutil.rmtree(tmp)
        for p in problems:
            print("DRIFT:", p)
        print("verify:", "fixtures match a fresh generation" if not problems else f"{len(problems)} differences")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
