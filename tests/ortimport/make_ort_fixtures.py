#!/usr/bin/env python3
"""Writes ONNX Runtime training artifact folders (tests/fixtures/ortimport) the way onnxruntime-training's
generate_artifacts and its training API lay them out, for OnnxTune's import-ort tests.

No onnxruntime-training wheel can be installed here, so this mirrors its offline tooling step by step (1.15–1.19
sources: onnxblock/_training_graph_utils.py, loss/loss.py, optim/optim.py, training_api/checkpoint.cc):
- eval_model.onnx: the forward model with the trainable and frozen parameters moved from initializers to graph
  inputs (after the data inputs), the loss block appended (standard ops) and the loss as the only graph output;
- optimizer_model.onnx: one com.microsoft AdamWOptimizer (or SGDOptimizerV2) node over tensor sequences;
- checkpoint: the flatbuffer file (identifier ODTC, version 2) written from ort_training_checkpoint.fbs with flatc's
  Python code, or the older directory of length-prefixed TensorProto sequences (.pbseq);
- the optimizer state is that of a few real update steps with the optimizer the folder declares, so moments, step
  and learning rate are non-trivial.
reference.json keeps what an importer must reproduce (parameter and moment values as float32 bit patterns, step,
learning rate, properties, a batch and its loss computed by PyTorch).

Run: /usr/bin/python3 tests/ortimport/make_ort_fixtures.py   (needs torch, onnx, numpy, python3-flatbuffers, flatc)
"""
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch
from google.protobuf.internal.encoder import _VarintBytes
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCHEMA = os.path.join(ROOT, "src", "OnnxTune.Migration", "Schema")
OUT = os.path.join(ROOT, "tests", "fixtures", "ortimport")
OPSET = 14


class Mlp(torch.nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, classes)

    def forward(self, input):
        return self.fc2(torch.relu(self.fc1(input)))


def export(model, path):
    x = torch.randn(2, 4)
    torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=OPSET,
                      do_constant_folding=False)
    return onnx.load(path)


# ---------------------------------------------------------------- eval model (as onnxblock builds it)

def move_initializers_to_inputs(model, names):
    kept = []
    for init in model.graph.initializer:
        if init.name in names:
            model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
        else:
            kept.append(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def add_cross_entropy(model, scores="output", labels="labels"):
    out = [o for o in model.graph.output if o.name == scores][0]
    label_input = onnx.ValueInfoProto()
    label_input.CopyFrom(out)
    label_input.name = labels
    label_input.type.tensor_type.elem_type = TensorProto.INT32
    del label_input.type.tensor_type.shape.dim[1]
    model.graph.input.append(label_input)
    model.graph.node.append(helper.make_node("SoftmaxCrossEntropyLoss", [scores, labels],
                                            ["onnx::loss::2", "onnx::log_prob::3"], reduction="mean",
                                            name="onnx::SoftmaxCrossEntropyLoss::4"))
    return "onnx::loss::2"


def add_mse(model, scores="output", target="target"):
    out = [o for o in model.graph.output if o.name == scores][0]
    target_input = onnx.ValueInfoProto()
    target_input.CopyFrom(out)
    target_input.name = target
    model.graph.input.append(target_input)
    model.graph.initializer.append(numpy_helper.from_array(np.array(2.0, dtype=np.float32), "pow_exponent::5"))
    model.graph.node.extend([
        helper.make_node("Sub", [scores, target], ["sub_output::6"], name="Sub::7"),
        helper.make_node("Pow", ["sub_output::6", "pow_exponent::5"], ["pow_output::8"], name="Pow::9"),
        helper.make_node("ReduceMean", ["pow_output::8"], ["reducemean_output::10"], name="ReduceMean::11"),
    ])
    return "reducemean_output::10"


def eval_model(forward, params, loss):
    model = onnx.ModelProto()
    model.CopyFrom(forward)
    move_initializers_to_inputs(model, set(params))
    loss_name = {"ce": add_cross_entropy, "mse": add_mse}[loss](model)
    outputs = [o for o in model.graph.output]
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(loss_name, TensorProto.FLOAT, []))
    del outputs
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------- optimizer model (onnxblock.optim)

def adamw_model(params, attrs):
    graph_inputs = [helper.make_tensor_value_info("learning_rate", TensorProto.FLOAT, [1]),
                    helper.make_tensor_value_info("step", TensorProto.INT64, [1])]
    for name in ["params", "first_order_moments", "second_order_moments"]:
        graph_inputs.append(helper.make_tensor_sequence_value_info(name, TensorProto.FLOAT, None))
    grads = []
    for p in params:
        grads.append(p.name + "_grad")
        graph_inputs.append(helper.make_tensor_value_info(grads[-1], TensorProto.FLOAT, list(p.dims)))
    nodes = [helper.make_node("SequenceConstruct", grads, ["sequenceconstruct_output::12"], name="SequenceConstruct::13"),
             helper.make_node("AdamWOptimizer", ["learning_rate", "step", "params", "sequenceconstruct_output::12",
                                                 "first_order_moments", "second_order_moments"],
                              ["adamw.updated_flag::14"], name="AdamWOptimizer::15", domain="com.microsoft", **attrs)]
    graph = helper.make_graph(nodes, "AdamW Optimizer Model", graph_inputs,
                              [helper.make_tensor_value_info("adamw.updated_flag::14", TensorProto.INT64, [1])])
    model = helper.make_model(graph, producer_name="onnxblock offline tooling",
                              opset_imports=[helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("", 14)])
    return model


def sgd_model(params):
    graph_inputs = [helper.make_tensor_value_info("learning_rate", TensorProto.FLOAT, [1]),
                    helper.make_tensor_sequence_value_info("params", TensorProto.FLOAT, None)]
    grads = []
    for p in params:
        grads.append(p.name + "_grad")
        graph_inputs.append(helper.make_tensor_value_info(grads[-1], TensorProto.FLOAT, list(p.dims)))
    nodes = [helper.make_node("SequenceConstruct", grads, ["sequenceconstruct_output::16"], name="SequenceConstruct::17"),
             helper.make_node("SGDOptimizerV2", ["learning_rate", "params", "sequenceconstruct_output::16"],
                              ["sgd.updated_flag::18"], name="SGDOptimizerV2::19", domain="com.microsoft")]
    graph = helper.make_graph(nodes, "SGD Optimizer Model", graph_inputs,
                              [helper.make_tensor_value_info("sgd.updated_flag::18", TensorProto.INT64, [1])])
    return helper.make_model(graph, producer_name="onnxblock offline tooling",
                             opset_imports=[helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("", 14)])


# ---------------------------------------------------------------- training to get real optimizer state

def loss_fn(kind, out, y):
    if kind == "ce":
        return torch.nn.functional.cross_entropy(out, y.long())
    return torch.nn.functional.mse_loss(out, y)


def train(model, trainable, kind, x, y, optimizer, lr, steps):
    """Runs `steps` updates of ORT's optimizer kernels (float32) and returns (step, moments)."""
    params = dict(model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in trainable)
    m = {n: torch.zeros_like(params[n]) for n in trainable}
    v = {n: torch.zeros_like(params[n]) for n in trainable}
    for t in range(1, steps + 1):
        model.zero_grad()
        loss_fn(kind, model(x), y).backward()
        with torch.no_grad():
            for n in trainable:
                p, g = params[n], params[n].grad
                if optimizer["type"] == "sgd":
                    p -= lr * g
                    continue
                b1, b2, eps, wd = optimizer["alpha"], optimizer["beta"], optimizer["epsilon"], optimizer["weight_decay"]
                if optimizer["adam_mode"] == 0:  # PyTorch AdamW
                    p *= 1 - lr * wd
                m[n] = b1 * m[n] + (1 - b1) * g
                v[n] = b2 * v[n] + (1 - b2) * g * g
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                if optimizer["adam_mode"] == 0:
                    p -= (lr / bc1) * m[n] / (v[n].sqrt() / (bc2 ** 0.5) + eps)
                else:  # HuggingFace AdamW (ORT's default, adam_mode 1)
                    step_size = lr * (bc2 ** 0.5) / bc1 if optimizer["correct_bias"] else lr
                    p -= step_size * m[n] / (v[n].sqrt() + eps)
                    if wd > 0:
                        p -= lr * wd * p
    return steps, m, v


# ---------------------------------------------------------------- checkpoints

def flatbuffer_module():
    tmp = tempfile.mkdtemp()
    subprocess.run(["flatc", "--python", "-o", tmp, os.path.join(SCHEMA, "ort_training_checkpoint.fbs"),
                    os.path.join(SCHEMA, "ort.fbs")], check=True)
    sys.path.insert(0, tmp)
    return lambda name: importlib.import_module("OnnxTune.Migration.Checkpoints.Fbs." + name)


def write_flatbuffer_checkpoint(path, trainable, frozen, group, properties, fbs, nominal=False):
    import flatbuffers
    Tensor, ModuleState, Checkpoint = fbs("Tensor"), fbs("ModuleState"), fbs("Checkpoint")
    ParameterOptimizerState, OptimizerGroup = fbs("ParameterOptimizerState"), fbs("OptimizerGroup")
    IntProperty, FloatProperty, StringProperty, PropertyBag = (fbs("IntProperty"), fbs("FloatProperty"),
                                                               fbs("StringProperty"), fbs("PropertyBag"))
    b = flatbuffers.Builder(1024)

    def vector(start, items):
        start(b, len(items))
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector(len(items))

    def tensor(name, array):
        n = b.CreateString(name)
        raw = None if nominal else b.CreateByteVector(np.ascontiguousarray(array, dtype="<f4").tobytes())
        Tensor.TensorStartDimsVector(b, array.ndim)
        for d in reversed(array.shape):
            b.PrependInt64(d)
        dims = b.EndVector(array.ndim)
        Tensor.TensorStart(b)
        Tensor.TensorAddName(b, n)
        Tensor.TensorAddDims(b, dims)
        Tensor.TensorAddDataType(b, 1)
        if raw is not None:
            Tensor.TensorAddRawData(b, raw)
        return Tensor.TensorEnd(b)

    req = vector(ModuleState.ModuleStateStartRequiresGradParamsVector, [tensor(n, a) for n, a in sorted(trainable.items())])
    frz = vector(ModuleState.ModuleStateStartFrozenParamsVector, [tensor(n, a) for n, a in sorted(frozen.items())])
    ModuleState.ModuleStateStart(b)
    ModuleState.ModuleStateAddRequiresGradParams(b, req)
    ModuleState.ModuleStateAddFrozenParams(b, frz)
    ModuleState.ModuleStateAddIsNominalState(b, nominal)
    module_state = ModuleState.ModuleStateEnd(b)

    groups = []
    if group is not None:
        states = []
        for pname in sorted(group["moments"]):
            moms = vector(ParameterOptimizerState.ParameterOptimizerStateStartMomentumsVector,
                          [tensor(mname, arr) for mname, arr in group["moments"][pname]])
            pn = b.CreateString(pname)
            ParameterOptimizerState.ParameterOptimizerStateStart(b)
            ParameterOptimizerState.ParameterOptimizerStateAddParamName(b, pn)
            ParameterOptimizerState.ParameterOptimizerStateAddMomentums(b, moms)
            states.append(ParameterOptimizerState.ParameterOptimizerStateEnd(b))
        sv = vector(OptimizerGroup.OptimizerGroupStartOptimizerStatesVector, states)
        gn = b.CreateString("group0")
        OptimizerGroup.OptimizerGroupStart(b)
        OptimizerGroup.OptimizerGroupAddGroupName(b, gn)
        OptimizerGroup.OptimizerGroupAddStep(b, group["step"])
        OptimizerGroup.OptimizerGroupAddInitialLearningRate(b, group["lr"])
        OptimizerGroup.OptimizerGroupAddOptimizerStates(b, sv)
        groups.append(OptimizerGroup.OptimizerGroupEnd(b))
    gv = vector(Checkpoint.CheckpointStartOptimizerGroupsVector, groups)

    def props(kind, start_vec, start, add_name, add_value, end):
        out = []
        for name, value in sorted(properties[kind].items()):
            nm = b.CreateString(name)
            val = b.CreateString(value) if kind == "strings" else value
            start(b)
            add_name(b, nm)
            add_value(b, val)
            out.append(end(b))
        return vector(start_vec, out)

    ints = props("ints", PropertyBag.PropertyBagStartIntsVector, IntProperty.IntPropertyStart, IntProperty.IntPropertyAddName,
                 IntProperty.IntPropertyAddValue, IntProperty.IntPropertyEnd)
    floats = props("floats", PropertyBag.PropertyBagStartFloatsVector, FloatProperty.FloatPropertyStart,
                   FloatProperty.FloatPropertyAddName, FloatProperty.FloatPropertyAddValue, FloatProperty.FloatPropertyEnd)
    strings = props("strings", PropertyBag.PropertyBagStartStringsVector, StringProperty.StringPropertyStart,
                    StringProperty.StringPropertyAddName, StringProperty.StringPropertyAddValue, StringProperty.StringPropertyEnd)
    PropertyBag.PropertyBagStart(b)
    PropertyBag.PropertyBagAddInts(b, ints)
    PropertyBag.PropertyBagAddFloats(b, floats)
    PropertyBag.PropertyBagAddStrings(b, strings)
    bag = PropertyBag.PropertyBagEnd(b)

    Checkpoint.CheckpointStart(b)
    Checkpoint.CheckpointAddVersion(b, 2)
    Checkpoint.CheckpointAddModuleState(b, module_state)
    Checkpoint.CheckpointAddOptimizerGroups(b, gv)
    Checkpoint.CheckpointAddPropertyBag(b, bag)
    b.Finish(Checkpoint.CheckpointEnd(b), file_identifier=b"ODTC")
    with open(path, "wb") as f:
        f.write(b.Output())


def write_pbseq(path, protos):
    """protobuf_message_sequence.h: varint32 count, then per message varint32 size + bytes."""
    with open(path, "wb") as f:
        f.write(_VarintBytes(len(protos)))
        for p in protos:
            data = p.SerializeToString()
            f.write(_VarintBytes(len(data)))
            f.write(data)


def tensor_proto(name, array):
    # utils::TensorToTensorProto writes raw_data.
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def property_proto(name, value):
    # onnx ToTensor<T>(v): a scalar in the typed field, no dims.
    if isinstance(value, str):
        t = helper.make_tensor(name, TensorProto.STRING, [], [value.encode()])
    elif isinstance(value, int):
        t = helper.make_tensor(name, TensorProto.INT64, [], [value])
    else:
        t = helper.make_tensor(name, TensorProto.FLOAT, [], [value])
    return t


def write_pbseq_checkpoint(path, trainable, frozen, group, properties):
    os.makedirs(path)
    write_pbseq(os.path.join(path, "paramtrain_tensors.pbseq"), [tensor_proto(n, a) for n, a in sorted(trainable.items())])
    if frozen:
        write_pbseq(os.path.join(path, "paramfrozen_tensors.pbseq"), [tensor_proto(n, a) for n, a in sorted(frozen.items())])
    if group is not None:
        by_moment = {}
        for pname, moms in group["moments"].items():
            for mname, arr in moms:
                by_moment.setdefault(mname, []).append((pname, arr))
        for mname, items in by_moment.items():
            write_pbseq(os.path.join(path, f"optim_group0_{mname}_tensors.pbseq"),
                        [tensor_proto(n, a) for n, a in sorted(items)])
        write_pbseq(os.path.join(path, "optim_group0_properties.pbseq"),
                    [property_proto("builtin.initial_learning_rate", float(group["lr"])),
                     property_proto("builtin.step", int(group["step"]))])
    custom = [property_proto(n, v) for kind in ("ints", "floats", "strings") for n, v in sorted(properties[kind].items())]
    if custom:
        write_pbseq(os.path.join(path, "custom_properties.pbseq"), custom)


# ---------------------------------------------------------------- folders

def bits(array):
    return [int(v) for v in np.ascontiguousarray(array, dtype="<f4").view("<u4").ravel()]


def make_folder(name, fmt, loss, optimizer, frozen_names, fbs, seed, steps=3, lr=0.01):
    torch.manual_seed(seed)
    classes = 3
    model = Mlp(classes)
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    tmp = tempfile.mkdtemp()
    forward = export(model, os.path.join(tmp, "model.onnx"))
    names = [i.name for i in forward.graph.initializer]
    trainable = [n for n in names if n not in frozen_names]

    x = torch.randn(16, 4)
    if loss == "ce":
        y = torch.randint(0, classes, (16,), dtype=torch.int32)
    else:
        y = torch.randn(16, classes)
    group = None
    if optimizer is not None and steps > 0:
        step, m, v = train(model, trainable, loss, x, y, optimizer, lr, steps)
        group = {"step": step, "lr": lr, "moments": {}}
        for n in trainable:
            group["moments"][n] = [] if optimizer["type"] == "sgd" else [("momentum0", m[n].numpy()), ("momentum1", v[n].numpy())]
        if optimizer["type"] == "sgd":
            group["moments"] = {}
    values = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}

    onnx.save(eval_model(forward, trainable + frozen_names, loss), os.path.join(folder, "eval_model.onnx"))
    if optimizer is not None:
        params = [i for i in forward.graph.initializer if i.name in trainable]
        opt = sgd_model(params) if optimizer["type"] == "sgd" else adamw_model(
            params, {k: optimizer[k] for k in ("alpha", "beta", "epsilon", "weight_decay", "correct_bias", "adam_mode")})
        onnx.save(opt, os.path.join(folder, "optimizer_model.onnx"))

    properties = {"ints": {"epoch": 2}, "floats": {"best_score": 0.875}, "strings": {"note": "from ORT"}}
    tr = {n: values[n] for n in trainable}
    fr = {n: values[n] for n in frozen_names}
    ckpt = os.path.join(folder, "checkpoint")
    if fmt == "flatbuffer":
        write_flatbuffer_checkpoint(ckpt, tr, fr, group, properties, fbs)
    else:
        write_pbseq_checkpoint(ckpt, tr, fr, group, properties)

    batch_x, batch_y = torch.randn(8, 4), (torch.randint(0, classes, (8,), dtype=torch.int32) if loss == "ce" else torch.randn(8, classes))
    with torch.no_grad():
        batch_loss = float(loss_fn(loss, model(batch_x), batch_y))
    reference = {
        "format": fmt, "loss": loss, "optimizer": optimizer, "trainable": trainable, "frozen": frozen_names,
        "parameters": {n: {"shape": list(values[n].shape), "bits": bits(values[n])} for n in names},
        "moments": {n: {mn: bits(a) for mn, a in moms} for n, moms in (group or {"moments": {}})["moments"].items()},
        "step": group["step"] if group else 0, "learning_rate": lr if group else None, "properties": properties,
        "batch": {"input": batch_x.numpy().ravel().tolist(), "rows": 8,
                  "labels": batch_y.numpy().ravel().tolist(), "loss": batch_loss},
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    shutil.rmtree(tmp)


def main():
    fbs = flatbuffer_module()
    hf = {"type": "adamw", "alpha": 0.9, "beta": 0.999, "epsilon": 1e-6, "weight_decay": 0.0, "correct_bias": 1, "adam_mode": 1}
    torch_mode = {"type": "adamw", "alpha": 0.9, "beta": 0.99, "epsilon": 1e-8, "weight_decay": 0.01, "correct_bias": 1, "adam_mode": 0}
    # ORT's generate_artifacts defaults (HuggingFace AdamW), frozen first layer, trained 3 steps, flatbuffer checkpoint.
    make_folder("flatbuffer-ce-adamw", "flatbuffer", "ce", hf, ["fc1.weight", "fc1.bias"], fbs, seed=1)
    # The .pbseq directory checkpoint (ORT 1.14/1.15), MSE, PyTorch-mode AdamW, everything trainable.
    make_folder("pbseq-mse-adamw", "pbseq", "mse", torch_mode, [], fbs, seed=2)
    # A fresh generate_artifacts folder: no optimizer state yet, plain SGD (SGDOptimizerV2).
    make_folder("flatbuffer-ce-sgd-fresh", "flatbuffer", "ce", {"type": "sgd"}, [], fbs, seed=3, steps=0)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
