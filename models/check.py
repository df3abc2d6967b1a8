"""Checks Triton-layout model repositories with onnxruntime (CPU): every version of every model loads and runs on a
sample batch; outputs match the onnx reference evaluator and the model's own expectations (simple adds and
subtracts, datatypes echoes, probabilities sum to 1); a batch gives the same rows as single requests; and each
config.pbtxt parses as Triton's ModelConfig and agrees with the model's inputs and outputs.

    .venv/bin/python models/check.py [REPO ...]    (default: models/, and benches/models/ when present)
"""

import ctypes
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import text_format
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from tritonclient.grpc import model_config_pb2

ROOT = Path(__file__).resolve().parent.parent
BATCH = 3
SEED = 7

# ONNX element type -> Triton config datatype (the ones these repositories use).
CONFIG_TYPES = {
    TensorProto.BOOL: "TYPE_BOOL", TensorProto.UINT8: "TYPE_UINT8", TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32", TensorProto.UINT64: "TYPE_UINT64", TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16", TensorProto.INT32: "TYPE_INT32", TensorProto.INT64: "TYPE_INT64",
    TensorProto.FLOAT16: "TYPE_FP16", TensorProto.FLOAT: "TYPE_FP32", TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.STRING: "TYPE_STRING", TensorProto.BFLOAT16: "TYPE_BF16",
}
TOLERANCE = {TensorProto.FLOAT16: 1e-2, TensorProto.BFLOAT16: 1e-2, TensorProto.FLOAT: 1e-4}


def elem_type(vi):
    return vi.type.tensor_type.elem_type


def dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def sample(vi, rng):
    """A random [BATCH, ...] array for a graph input whose first dimension is the batch."""
    t, shape = elem_type(vi), [BATCH, *dims(vi)[1:]]
    if t == TensorProto.STRING:
        return np.array([f"r{i}-é-{n}" for i, n in enumerate(rng.integers(0, 1000, np.prod(shape)))],
                        dtype=object).reshape(shape)
    dtype = helper.tensor_dtype_to_np_dtype(t)
    if t == TensorProto.BOOL:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0 if np.issubdtype(dtype, np.unsignedinteger) else -100, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def to_numpy(value):
    """An output OrtValue as numpy; the Python binding has no numpy view of bfloat16, so copy its bytes."""
    if value.data_type() != "tensor(bfloat16)":
        return value.numpy()
    raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    bf16 = helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16)
    return np.frombuffer(raw, dtype=np.uint16).view(bf16).reshape(value.shape())


def run_ort(m, feeds):
    """Runs model `m` with onnxruntime on CPU and returns {output name: array}.

    The Python binding takes strings only as numpy feeds and bfloat16 only as OrtValues, so a model with both
    (datatypes) is run one output at a time, each on the sub-graph that output needs."""
    types = {elem_type(i) for i in m.graph.input}
    if TensorProto.STRING in types and TensorProto.BFLOAT16 in types:
        result = {}
        for out in m.graph.output:
            needed = needed_inputs(m.graph, out.name)
            sub = onnx.utils.Extractor(m).extract_model(needed, [out.name])
            result.update(run_ort(sub, {k: feeds[k] for k in needed}))
        return result
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in m.graph.output]
    if TensorProto.BFLOAT16 not in types:
        return dict(zip(names, sess.run(names, feeds)))
    values = {k: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(v.view(np.uint16), TensorProto.BFLOAT16)
              if v.dtype == helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16) else ort.OrtValue.ortvalue_from_numpy(v)
              for k, v in feeds.items()}
    return dict(zip(names, map(to_numpy, sess.run_with_ort_values(names, values))))


def needed_inputs(graph, output):
    producers = {o: n for n in graph.node for o in n.output}
    graph_inputs = {i.name for i in graph.input}
    needed, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in graph_inputs:
            needed.add(name)
        elif name in producers:
            stack.extend(producers[name].input)
    return sorted(needed)


def assert_close(name, t, got, want):
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    if t in TOLERANCE:
        tol = TOLERANCE[t]
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol, err_msg=name)
    else:
        assert np.array_equal(got, want), f"{name}: outputs differ"


def expectations(model_name, feeds, outs):
    """Checks that follow from what each example model computes."""
    if model_name == "simple":
        assert np.array_equal(outs["OUTPUT0"], feeds["INPUT0"] + feeds["INPUT1"])
        assert np.array_equal(outs["OUTPUT1"], feeds["INPUT0"] - feeds["INPUT1"])
    elif model_name == "datatypes":
        assert len(outs) == 14, sorted(outs)
        for name, value in outs.items():
            want = feeds["IN_" + name.removeprefix("OUT_")]
            assert value.dtype == want.dtype and np.array_equal(value, want), f"{name} does not echo its input"
    elif model_name == "classifier":
        p = outs["probabilities"]
        assert p.shape == (BATCH, 4) and (p >= 0).all() and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    elif model_name in ("mlp", "cnn"):
        assert outs["y"].shape == (BATCH, 10) and np.isfinite(outs["y"]).all()


def check_config(model_dir, m):
    path = model_dir / "config.pbtxt"
    if not path.exists():
        return "no config.pbtxt (auto-completed by the server)"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert config.name == model_dir.name, f"{path}: name {config.name!r}"
    assert config.platform == "onnxruntime_onnx", f"{path}: platform {config.platform!r}"
    for entries, graph_side in ((config.input, m.graph.input), (config.output, m.graph.output)):
        want = {vi.name: (CONFIG_TYPES[elem_type(vi)], dims(vi)[1:] if config.max_batch_size else dims(vi))
                for vi in graph_side}
        got = {e.name: (model_config_pb2.DataType.Name(e.data_type), list(e.dims)) for e in entries}
        assert got == want, f"{path}: config {got} != model {want}"
    return f"config ok (max_batch_size {config.max_batch_size})"


def check_version(model_dir, path, rng):
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    # The whole model must load in one ORT session (every kernel found), even when run_ort splits it.
    ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {vi.name: sample(vi, rng) for vi in m.graph.input}
    outs = run_ort(m, feeds)
    reference = dict(zip([o.name for o in m.graph.output], ReferenceEvaluator(m).run(None, feeds)))
    for vi in m.graph.output:
        assert_close(vi.name, elem_type(vi), outs[vi.name], reference[vi.name])
    first = run_ort(m, {k: v[:1] for k, v in feeds.items()})
    for vi in m.graph.output:
        assert_close(vi.name + " (batch of 1)", elem_type(vi), first[vi.name], outs[vi.name][:1])
    expectations(model_dir.name, feeds, outs)


def check_repository(repo):
    rng = np.random.default_rng(SEED)
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        versions = sorted((p for p in model_dir.glob("*/model.onnx") if p.parent.name.isdigit()),
                          key=lambda p: int(p.parent.name))
        assert versions, f"{model_dir}: no <version>/model.onnx"
        note = check_config(model_dir, onnx.load(versions[-1]))
        for path in versions:
            check_version(model_dir, path, rng)
        print(f"ok  {model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir}: "
              f"versions {[int(p.parent.name) for p in versions]}, {note}")


def main():
    repos = [Path(a) for a in sys.argv[1:]] or [ROOT / "models"] + [p for p in [ROOT / "benches/models"] if p.is_dir()]
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    for repo in repos:
        check_repository(repo)


if __name__ == "__main__":
    main()
