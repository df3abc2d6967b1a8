"""Writes Switchyard's example model repository (models/, Triton layout) and, with --bench, the benchmark models
(benches/models/, git-ignored). Graphs are built with the onnx helpers and weights come from fixed seeds, so every
run writes byte-identical files.

    .venv/bin/python models/generate.py [--bench]
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

ROOT = Path(__file__).resolve().parent.parent
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17

# Triton datatype name -> ONNX element type, for the `datatypes` model.
DATATYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
    "BF16": TensorProto.BFLOAT16,
}


def tensor(name, elem_type, dims):
    return helper.make_tensor_value_info(name, elem_type, ["batch", *dims])


def model(graph):
    m = helper.make_model(
        graph,
        producer_name="switchyard-models",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(m, full_check=True)
    return m


def save(m, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m.SerializeToString())


def io_block(kind, entries):
    """`input [...]` / `output [...]` of a config.pbtxt from (name, TYPE_*, dims[, optional]) tuples."""
    items = [
        f'  {{\n    name: "{e[0]}"\n    data_type: {e[1]}\n    dims: [ {", ".join(map(str, e[2]))} ]\n'
        + ("    optional: true\n" if len(e) > 3 and e[3] else "")
        + "  }"
        for e in entries
    ]
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def write_config(path, name, max_batch_size, inputs, outputs, extra=""):
    text = f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
    text += io_block("input", inputs) + io_block("output", outputs) + extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def dense(rng, name, fan_in, fan_out):
    """Gemm weights in [out, in] layout (used with transB=1), He-scaled, and a small bias."""
    w = rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_out, fan_in)).astype(np.float32)
    b = rng.normal(0.0, 0.01, fan_out).astype(np.float32)
    return [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]


def gemm(name, x, y):
    return helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [y], name=name, transB=1)


def simple(doc):
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
    ]
    i32 = TensorProto.INT32
    inputs = [tensor("INPUT0", i32, [16]), tensor("INPUT1", i32, [16])]
    outputs = [tensor("OUTPUT0", i32, [16]), tensor("OUTPUT1", i32, [16])]
    return model(helper.make_graph(nodes, "simple", inputs, outputs, doc_string=doc))


def datatypes():
    nodes = [helper.make_node("Identity", [f"IN_{t}"], [f"OUT_{t}"], name=f"identity_{t}") for t in DATATYPES]
    inputs = [tensor(f"IN_{t}", e, [4]) for t, e in DATATYPES.items()]
    outputs = [tensor(f"OUT_{t}", e, [4]) for t, e in DATATYPES.items()]
    doc = "One Identity per Triton datatype: IN_<TYPE> -> OUT_<TYPE>, shape [batch, 4]."
    return model(helper.make_graph(nodes, "datatypes", inputs, outputs, doc_string=doc))


def classifier():
    rng = np.random.default_rng(1)
    nodes = [
        gemm("fc1", "features", "h1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        gemm("fc2", "a1", "logits"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
    ]
    inits = dense(rng, "fc1", 16, 32) + dense(rng, "fc2", 32, 4)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "classifier", [tensor("features", f32, [16])], [tensor("probabilities", f32, [4])], inits,
        doc_string="MLP 16 -> 32 -> 4 with softmax over 4 classes.",
    )
    return model(graph)


# The credit model's weights on its 8 features: it uses features 0, 2 and 5 only. Feature 7 is the applicant's group
# (0 or 1), the protected attribute its fairness monitoring watches; the model never reads it.
CREDIT_WEIGHTS = [2.0, 0.0, -1.5, 0.0, 0.0, 1.0, 0.0, 0.0]


def credit():
    """Logistic credit model: P(approve) = sigmoid(2 x0 - 1.5 x2 + x5 - 0.25), as softmax over [deny, approve]."""
    w = np.zeros((8, 2), np.float32)
    w[:, 1] = CREDIT_WEIGHTS
    b = np.array([0.0, -0.25], np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "b"], ["logits"], name="bias"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "credit", [tensor("features", f32, [8])], [tensor("probabilities", f32, [2])], inits,
        doc_string="Logistic model over features 0, 2 and 5 of 8; class 1 = approve.",
    )
    return model(graph)


def credit_rows(rng, n):
    """Applicants: features 0-6 ~ N(0, 1), feature 7 the group (0 or 1, half each)."""
    rows = rng.standard_normal((n, 8)).astype(np.float32)
    rows[:, 7] = rng.integers(0, 2, n).astype(np.float32)
    return rows


def mlp():
    rng = np.random.default_rng(2)
    nodes = [
        gemm("fc1", "x", "h1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        gemm("fc2", "a1", "h2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        gemm("fc3", "a2", "y"),
    ]
    inits = dense(rng, "fc1", 256, 1024) + dense(rng, "fc2", 1024, 1024) + dense(rng, "fc3", 1024, 10)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "mlp", [tensor("x", f32, [256])], [tensor("y", f32, [10])], inits,
                              doc_string="MLP 256 -> 1024 -> 1024 -> 10 with Relu.")
    return model(graph)


def cnn():
    rng = np.random.default_rng(3)

    def conv(name, cin, cout):
        w = rng.normal(0.0, np.sqrt(2.0 / (cin * 9)), (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0.0, 0.01, cout).astype(np.float32)
        return [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]

    nodes = []
    for i, src in ((1, "x"), (2, "p1")):
        nodes += [
            helper.make_node("Conv", [src, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], name=f"conv{i}",
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2]),
        ]
    nodes += [
        helper.make_node("GlobalAveragePool", ["p2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        gemm("fc", "flat", "y"),
    ]
    inits = conv("conv1", 3, 16) + conv("conv2", 16, 32) + dense(rng, "fc", 32, 10)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "cnn", [tensor("x", f32, [3, 64, 64])], [tensor("y", f32, [10])], inits,
                              doc_string="CNN: 2 x (Conv 3x3 + Relu + MaxPool 2), GlobalAveragePool, Gemm 32 -> 10.")
    return model(graph)


def optional():
    f32 = TensorProto.FLOAT
    # An input that is also an initializer has a default value, so a request may leave it out (Triton's
    # `optional: true`). The defaults are one row of zeros, broadcast over the batch.
    inits = [numpy_helper.from_array(np.zeros((1, 4), np.float32), name) for name in ("X", "Y")]
    inits.append(numpy_helper.from_array(np.array([10], np.float32), "ten"))
    nodes = [
        helper.make_node("Mul", ["Y", "ten"], ["y10"], name="scale"),
        helper.make_node("Add", ["X", "y10"], ["Z"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "optional", [tensor("X", f32, [4]), tensor("Y", f32, [4])], [tensor("Z", f32, [4])], inits,
        doc_string="Z = X + 10 * Y; X and Y are optional and default to zeros.",
    )
    return model(graph)


def write_golden(version_dir, cases, budget=None, tolerance=None):
    """A golden set (validation/cases/*.json, optional validation/budget.json): inputs in V2 JSON form and the
    outputs the onnx reference evaluator (not ONNX Runtime) computes for them."""
    import json

    model_path = version_dir / "model.onnx"
    ref = ReferenceEvaluator(onnx.load(model_path))
    out_names = [o.name for o in onnx.load(model_path).graph.output]
    cases_dir = version_dir / "validation/cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    for name, feeds, datatype in cases:
        results = ref.run(None, feeds)
        body = {
            "inputs": [{"name": k, "datatype": datatype, "shape": list(v.shape), "data": v.flatten().tolist()}
                       for k, v in feeds.items()],
            "outputs": [{"name": n, "shape": list(r.shape), "data": np.asarray(r).flatten().tolist()}
                        for n, r in zip(out_names, results)],
        }
        if tolerance:
            body["tolerance"] = tolerance
        (cases_dir / f"{name}.json").write_text(json.dumps(body, indent=1) + "\n")
    if budget:
        (version_dir / "validation/budget.json").write_text(json.dumps(budget) + "\n")


def write_profile(version_dir, inputs, max_features=32):
    """A drift reference profile (validation/profile.json, Switchyard's `switchyard-drift-profile/1` format) from
    reference input rows and the outputs the onnx reference evaluator computes for them: per feature, 10 quantile
    bins and the share of the rows in each; for class-score outputs, the argmax class shares."""
    import json

    model_path = version_dir / "model.onnx"
    m = onnx.load(model_path)
    ref = ReferenceEvaluator(m)
    results = ref.run(None, inputs)
    names = {TensorProto.FLOAT: "FP32"}

    def features(rows):
        out = []
        for i in range(rows.shape[1]):
            col = rows[:, i].astype(np.float64)
            edges = np.unique(np.quantile(col, np.linspace(0.1, 0.9, 9)))
            counts = np.bincount(np.searchsorted(edges, col, side="left"), minlength=len(edges) + 1)
            out.append({"feature": str(i), "count": len(col), "mean": float(col.mean()), "std": float(col.std()),
                        "edges": edges.tolist(), "proportions": (counts / len(col)).tolist()})
        return out

    tensors = []
    for vi, (name, rows) in zip(m.graph.input, inputs.items()):
        tensors.append({"name": name, "role": "input", "datatype": names[vi.type.tensor_type.elem_type],
                        "features": features(rows.reshape(len(rows), -1))})
    for vo, rows in zip(m.graph.output, results):
        rows = np.asarray(rows).reshape(len(rows), -1)
        t = {"name": vo.name, "role": "output", "datatype": names[vo.type.tensor_type.elem_type],
             "features": features(rows)}
        if 2 <= rows.shape[1] <= 1000:
            t["classes"] = (np.bincount(rows.argmax(axis=1), minlength=rows.shape[1]) / len(rows)).tolist()
        tensors.append(t)
    profile = {"format": "switchyard-drift-profile/1", "max_features": max_features, "batched": True,
               "samples": len(next(iter(inputs.values()))), "tensors": tensors}
    (version_dir / "validation").mkdir(parents=True, exist_ok=True)
    (version_dir / "validation/profile.json").write_text(json.dumps(profile) + "\n")


def write_examples(repo):
    io = [("INPUT0", "TYPE_INT32", [16]), ("INPUT1", "TYPE_INT32", [16])]
    out = [("OUTPUT0", "TYPE_INT32", [16]), ("OUTPUT1", "TYPE_INT32", [16])]
    write_config(repo / "simple/config.pbtxt", "simple", 8, io, out, "version_policy: { all {} }\n")
    doc = "OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."
    save(simple(doc), repo / "simple/1/model.onnx")
    save(simple(doc + " Version 2: retrained, same graph."), repo / "simple/2/model.onnx")
    ints = np.arange(16, dtype=np.int32).reshape(1, 16)
    for v in ("1", "2"):
        write_golden(repo / "simple" / v, [
            ("ones", {"INPUT0": ints, "INPUT1": np.ones((1, 16), np.int32)}, "INT32"),
            ("batch2", {"INPUT0": np.stack([ints[0], -ints[0]]), "INPUT1": np.stack([ints[0], ints[0] * 3])}, "INT32"),
        ])

    # No config.pbtxt on purpose: the server completes the configuration from the ONNX file.
    save(datatypes(), repo / "datatypes/1/model.onnx")

    extra = (
        "dynamic_batching { max_queue_delay_microseconds: 100 }\n"
        "instance_group [ { kind: KIND_CPU, count: 1 } ]\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
        "# Prediction log: one request in ten, when the server runs with --prediction-log-dir or --prediction-log-url.\n"
        'parameters { key: "prediction_log.sample_rate" value: { string_value: "0.1" } }\n'
        "# Drift: PSI against validation/profile.json over windows of 1000 rows.\n"
        'parameters { key: "drift.window" value: { string_value: "1000" } }\n'
    )
    write_config(repo / "classifier/config.pbtxt", "classifier", 32,
                 [("features", "TYPE_FP32", [16])], [("probabilities", "TYPE_FP32", [4])], extra)
    save(classifier(), repo / "classifier/1/model.onnx")
    rng = np.random.default_rng(11)
    write_golden(repo / "classifier/1", [
        ("row", {"features": rng.standard_normal((1, 16)).astype(np.float32)}, "FP32"),
        ("batch4", {"features": rng.standard_normal((4, 16)).astype(np.float32)}, "FP32"),
    ], budget={"p99_ms": 50, "requests": 50}, tolerance={"absolute": 1e-5, "relative": 1e-4})
    # Drift reference: what the classifier's traffic is expected to look like (features ~ N(0, 1)).
    write_profile(repo / "classifier/1", {"features": rng.standard_normal((5000, 16)).astype(np.float32)})


    # Credit: a binary classifier with quality (ground-truth feedback) and fairness monitoring, and explanations.
    extra = (
        "dynamic_batching { max_queue_delay_microseconds: 100 }\n"
        "instance_group [ { kind: KIND_CPU, count: 1 } ]\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
        "# Live quality from feedback (POST /v2/models/credit/feedback): alert below 80 % accuracy.\n"
        'parameters { key: "quality.min_accuracy" value: { string_value: "0.8" } }\n'
        "# Fairness: feature 7 is the applicant's group; class 1 (approve) is the favourable outcome.\n"
        'parameters { key: "fairness.attribute" value: { string_value: "input:features[7]" } }\n'
        'parameters { key: "fairness.favourable_class" value: { string_value: "1" } }\n'
        'parameters { key: "fairness.privileged" value: { string_value: "1" } }\n'
    )
    write_config(repo / "credit/config.pbtxt", "credit", 32,
                 [("features", "TYPE_FP32", [8])], [("probabilities", "TYPE_FP32", [2])], extra)
    save(credit(), repo / "credit/1/model.onnx")
    rng = np.random.default_rng(12)
    write_golden(repo / "credit/1", [
        ("row", {"features": credit_rows(rng, 1)}, "FP32"),
        ("batch4", {"features": credit_rows(rng, 4)}, "FP32"),
    ], tolerance={"absolute": 1e-5, "relative": 1e-4})
    # The reference profile: drift's baseline and the explanations' reference point (its feature means).
    write_profile(repo / "credit/1", {"features": credit_rows(rng, 5000)})

    # Optional inputs: with dynamic batching, requests carrying different inputs must never share a batch.
    write_config(repo / "optional/config.pbtxt", "optional", 8,
                 [("X", "TYPE_FP32", [4], True), ("Y", "TYPE_FP32", [4], True)], [("Z", "TYPE_FP32", [4])],
                 "dynamic_batching { max_queue_delay_microseconds: 100 }\n")
    save(optional(), repo / "optional/1/model.onnx")


def write_bench(repo):
    write_config(repo / "mlp/config.pbtxt", "mlp", 64, [("x", "TYPE_FP32", [256])], [("y", "TYPE_FP32", [10])])
    save(mlp(), repo / "mlp/1/model.onnx")
    write_config(repo / "cnn/config.pbtxt", "cnn", 64, [("x", "TYPE_FP32", [3, 64, 64])], [("y", "TYPE_FP32", [10])])
    save(cnn(), repo / "cnn/1/model.onnx")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", action="store_true", help="also write the benchmark models into benches/models/")
    args = parser.parse_args()
    write_examples(ROOT / "models")
    print(f"wrote {ROOT / 'models'}")
    if args.bench:
        write_bench(ROOT / "benches/models")
        print(f"wrote {ROOT / 'benches/models'}")


if __name__ == "__main__":
    main()
