"""A small NumPy evaluator for the ONNX operators the fixture models use.

onnxruntime is not installed for Debian's Python and onnx 1.12 has no onnx.reference, so the fixture generator
uses this to check that each exported graph computes what the PyTorch module computed. It implements only the
default-domain ops (opset 13/14 semantics) that appear in tests/fixtures; an unknown op raises.
"""
import math

import numpy as np
import onnx
from onnx import numpy_helper

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _axes_input(inputs, idx):
    if len(inputs) > idx and inputs[idx] is not None:
        return tuple(int(a) for a in inputs[idx].reshape(-1))
    return None


def _reduce(fn, x, axes, keepdims):
    if axes is None:
        axes = tuple(range(x.ndim))
    return fn(x, axis=tuple(a % x.ndim for a in axes), keepdims=bool(keepdims))


def run_node(node, inputs):
    op = node.op_type
    a = _attrs(node)
    x = inputs[0] if inputs else None
    if op == "Gemm":
        A, B = inputs[0], inputs[1]
        if a.get("transA", 0):
            A = A.T
        if a.get("transB", 0):
            B = B.T
        y = a.get("alpha", 1.0) * (A @ B)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + a.get("beta", 1.0) * inputs[2]
        return [y.astype(A.dtype)]
    if op == "MatMul":
        return [np.matmul(inputs[0], inputs[1])]
    if op in ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater"):
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
             "Equal": np.equal, "Less": np.less, "Greater": np.greater}[op]
        y = f(inputs[0], inputs[1])
        if op == "Div" and np.issubdtype(inputs[0].dtype, np.integer):
            y = np.floor_divide(inputs[0], inputs[1])
        if op in ("Add", "Sub", "Mul", "Div", "Pow"):
            y = y.astype(inputs[0].dtype)
        return [y]
    if op == "Neg":
        return [-x]
    if op == "Relu":
        return [np.maximum(x, 0).astype(x.dtype)]
    if op == "LeakyRelu":
        alpha = a.get("alpha", 0.01)
        return [np.where(x >= 0, x, alpha * x).astype(x.dtype)]
    if op == "PRelu":
        return [np.where(x >= 0, x, inputs[1] * x).astype(x.dtype)]
    if op == "Sigmoid":
        return [(1.0 / (1.0 + np.exp(-x))).astype(x.dtype)]
    if op == "Tanh":
        return [np.tanh(x)]
    if op == "Exp":
        return [np.exp(x)]
    if op == "Log":
        return [np.log(x)]
    if op == "Sqrt":
        return [np.sqrt(x)]
    if op == "Erf":
        return [_erf(x).astype(x.dtype)]
    if op in ("Softmax", "LogSoftmax"):
        axis = a.get("axis", -1)
        m = x - x.max(axis=axis, keepdims=True)
        lse = np.log(np.exp(m).sum(axis=axis, keepdims=True))
        y = m - lse
        return [(np.exp(y) if op == "Softmax" else y).astype(x.dtype)]
    if op == "Identity":
        return [x]
    if op == "Dropout":
        training = len(inputs) > 2 and inputs[2] is not None and bool(inputs[2])
        if training:
            raise NotImplementedError("Dropout in training mode is random; not evaluated")
        return [x, np.ones(x.shape, dtype=bool)]
    if op == "Reshape":
        shape = [int(s) for s in inputs[1]]
        shape = [x.shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
        return [x.reshape(shape)]
    if op == "Flatten":
        axis = a.get("axis", 1) % max(x.ndim, 1)
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]
    if op == "Squeeze":
        axes = _axes_input(inputs, 1)
        if axes is None:
            axes = tuple(i for i, s in enumerate(x.shape) if s == 1)
        return [np.squeeze(x, axis=tuple(ax % x.ndim for ax in axes))]
    if op == "Unsqueeze":
        axes = sorted(ax % (x.ndim + len(inputs[1].reshape(-1))) for ax in _axes_input(inputs, 1))
        y = x
        for ax in axes:
            y = np.expand_dims(y, ax)
        return [y]
    if op == "Transpose":
        perm = a.get("perm")
        return [np.transpose(x, perm)]
    if op == "Concat":
        return [np.concatenate(inputs, axis=a["axis"])]
    if op == "Slice":
        starts, ends = inputs[1].reshape(-1), inputs[2].reshape(-1)
        axes = _axes_input(inputs, 3) or tuple(range(len(starts)))
        steps = _axes_input(inputs, 4) or (1,) * len(starts)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[ax % x.ndim] = slice(int(s), int(max(min(e, 2**62), -2**62)), int(st))
        return [x[tuple(sl)]]
    if op == "ReduceMean":
        return [_reduce(np.mean, x, a.get("axes"), a.get("keepdims", 1)).astype(x.dtype)]
    if op == "ReduceSum":
        axes = _axes_input(inputs, 1)
        if axes is None and a.get("noop_with_empty_axes", 0):
            return [x]
        return [_reduce(np.sum, x, axes, a.get("keepdims", 1)).astype(x.dtype)]
    if op == "Gather":
        return [np.take(x, inputs[1].astype(np.int64), axis=a.get("axis", 0))]
    if op == "Shape":
        return [np.array(x.shape, dtype=np.int64)]
    if op == "Cast":
        to = onnx.helper.tensor_dtype_to_np_dtype(a["to"]) if hasattr(onnx.helper, "tensor_dtype_to_np_dtype") \
            else onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[a["to"]]
        return [x.astype(to)]
    if op == "Constant":
        return [numpy_helper.to_array(a["value"])]
    if op == "ConstantOfShape":
        v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        return [np.full([int(s) for s in x], v.reshape(-1)[0], dtype=v.dtype)]
    if op == "Expand":
        return [x * np.ones([int(s) for s in inputs[1]], dtype=x.dtype)]
    if op == "Where":
        return [np.where(inputs[0], inputs[1], inputs[2])]
    raise NotImplementedError(f"onnx_eval: op {op} (node {node.name}) is not implemented")


def run_model(model, feeds):
    """Runs model.graph on feeds (name -> ndarray) and returns the graph outputs as a dict."""
    env = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    env.update(feeds)
    for node in model.graph.node:
        ins = [env[n] if n else None for n in node.input]
        outs = run_node(node, ins)
        for name, val in zip(node.output, outs):
            if name:
                env[name] = np.asarray(val)
    return {o.name: env[o.name] for o in model.graph.output}
