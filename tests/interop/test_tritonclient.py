import queue
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

MODELS = Path(__file__).resolve().parents[2] / "models"
EXTENSIONS = {"binary_tensor_data", "statistics", "model_repository", "model_configuration"}
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES", "BF16"]
# tritonclient refuses to put BF16 in JSON; FP16 goes as JSON numbers.
BINARY_ONLY = {"BF16"}


class Transport:
    """One way of talking to the server through the unmodified tritonclient API, with results normalised."""

    def __init__(self, kind, server):
        self.kind = kind
        self.grpc = kind == "grpc"
        self.json = kind == "http-json"
        self.mod = grpcclient if self.grpc else httpclient
        self.client = self.mod.InferenceServerClient(server.grpc_url if self.grpc else server.http_url)

    def call(self, method, *args, **kwargs):
        """Calls a metadata-style method, returning plain JSON-like data for both protocols."""
        if self.grpc:
            kwargs["as_json"] = True
        return getattr(self.client, method)(*args, **kwargs)

    def model_config(self, name, version=""):
        config = self.call("get_model_config", name, version)
        return config["config"] if self.grpc else config

    def repository_index(self):
        index = self.call("get_model_repository_index")
        return index.get("models", []) if self.grpc else index

    def stats(self, name):
        totals = {"success": 0, "inference_count": 0, "execution_count": 0}
        for entry in self.call("get_inference_statistics", name)["model_stats"]:
            assert entry["name"] == name
            totals["success"] += int(entry["inference_stats"]["success"].get("count", 0))
            totals["inference_count"] += int(entry.get("inference_count", 0))
            totals["execution_count"] += int(entry.get("execution_count", 0))
        return totals

    def inputs(self, tensors):
        """tensors: {name: (array, datatype)} -> InferInputs; BF16 always binary (tritonclient has no JSON form for it)."""
        result = []
        for name, (array, datatype) in tensors.items():
            inp = self.mod.InferInput(name, list(array.shape), datatype)
            if self.grpc:
                inp.set_data_from_numpy(array)
            else:
                inp.set_data_from_numpy(array, binary_data=not self.json or datatype in BINARY_ONLY)
            result.append(inp)
        return result

    def outputs(self, names, datatypes=None):
        if self.grpc:
            return [self.mod.InferRequestedOutput(n) for n in names]
        datatypes = datatypes or {}
        return [self.mod.InferRequestedOutput(n, binary_data=not self.json or datatypes.get(n) in BINARY_ONLY)
                for n in names]

    def infer(self, model, tensors, outputs, version="", request_id="", datatypes=None):
        return self.client.infer(model, self.inputs(tensors), model_version=version, request_id=request_id,
                                 outputs=None if outputs is None else self.outputs(outputs, datatypes))

    @staticmethod
    def response(result):
        """(id, model_version, output names) of an InferResult of either protocol."""
        r = result.get_response()
        if isinstance(r, dict):
            return r.get("id", ""), r.get("model_version", ""), [o["name"] for o in r["outputs"]]
        return r.id, r.model_version, [o.name for o in r.outputs]


@pytest.fixture(params=["http-json", "http-binary", "grpc"])
def tp(request, server):
    t = Transport(request.param, server)
    yield t
    t.client.close()


def ints(shape, seed=0):
    return np.random.default_rng(seed).integers(-1000, 1000, shape, dtype=np.int32)


def simple_tensors(a, b):
    return {"INPUT0": (a, "INT32"), "INPUT1": (b, "INT32")}


def shape_of(meta):
    return [int(d) for d in meta.get("shape", meta.get("dims", []))]


def test_server_health_and_metadata(tp):
    assert tp.client.is_server_live()
    assert tp.client.is_server_ready()
    meta = tp.call("get_server_metadata")
    assert meta["name"] and meta["version"]
    assert EXTENSIONS <= set(meta["extensions"]), meta["extensions"]


def test_model_ready(tp):
    for model in ("simple", "datatypes", "classifier"):
        assert tp.client.is_model_ready(model), model
    assert tp.client.is_model_ready("simple", "1")
    assert tp.client.is_model_ready("simple", "2")
    for model, version in (("simple", "3"), ("no_such_model", "")):
        try:
            ready = tp.client.is_model_ready(model, version)
        except InferenceServerException:
            ready = False
        assert not ready, (model, version)


def test_model_metadata(tp):
    meta = tp.call("get_model_metadata", "simple")
    assert meta["name"] == "simple"
    assert meta["platform"] == "onnxruntime_onnx"
    assert {"1", "2"} <= set(meta["versions"])
    for group, names in (("inputs", ["INPUT0", "INPUT1"]), ("outputs", ["OUTPUT0", "OUTPUT1"])):
        assert [t["name"] for t in meta[group]] == names
        for t in meta[group]:
            assert t["datatype"] == "INT32" and shape_of(t) == [-1, 16], t
    meta = tp.call("get_model_metadata", "simple", "1")
    assert meta["name"] == "simple" and meta["inputs"]

    meta = tp.call("get_model_metadata", "datatypes")
    assert {t["name"]: (t["datatype"], shape_of(t)) for t in meta["inputs"]} == \
        {f"IN_{d}": (d, [-1, 4]) for d in DATATYPES}
    assert {t["name"]: (t["datatype"], shape_of(t)) for t in meta["outputs"]} == \
        {f"OUT_{d}": (d, [-1, 4]) for d in DATATYPES}


def test_model_config(tp):
    config = tp.model_config("simple")
    assert config["name"] == "simple"
    assert config["platform"] == "onnxruntime_onnx"
    assert int(config["max_batch_size"]) == 8
    assert [(i["name"], i["data_type"], shape_of(i)) for i in config["input"]] == \
        [("INPUT0", "TYPE_INT32", [16]), ("INPUT1", "TYPE_INT32", [16])]
    assert [(o["name"], o["data_type"], shape_of(o)) for o in config["output"]] == \
        [("OUTPUT0", "TYPE_INT32", [16]), ("OUTPUT1", "TYPE_INT32", [16])]

    config = tp.model_config("classifier")
    assert int(config["max_batch_size"]) == 32
    assert [(i["name"], i["data_type"], shape_of(i)) for i in config["input"]] == [("features", "TYPE_FP32", [16])]
    assert [(o["name"], o["data_type"], shape_of(o)) for o in config["output"]] == [("probabilities", "TYPE_FP32", [4])]
    assert "dynamic_batching" in config

    config = tp.model_config("datatypes")
    assert config["platform"] == "onnxruntime_onnx"
    assert int(config["max_batch_size"]) == 4
    assert {i["name"] for i in config["input"]} == {f"IN_{d}" for d in DATATYPES}
    assert {o["name"]: shape_of(o) for o in config["output"]} == {f"OUT_{d}": [4] for d in DATATYPES}
    assert {i["name"]: i["data_type"] for i in config["input"]} == \
        {f"IN_{d}": "TYPE_STRING" if d == "BYTES" else f"TYPE_{d}" for d in DATATYPES}


def test_repository_index(tp):
    index = tp.repository_index()
    names = {m["name"] for m in index}
    assert {"simple", "datatypes", "classifier"} <= names, index
    for m in index:
        if m["name"] in ("simple", "datatypes", "classifier"):
            assert m.get("state") == "READY", m


def test_simple_infer(tp):
    a, b = ints([1, 16], 1), ints([1, 16], 2)
    result = tp.infer("simple", simple_tensors(a, b), ["OUTPUT0", "OUTPUT1"], request_id="req-42")
    rid, version, names = tp.response(result)
    assert rid == "req-42"
    assert version == "2"
    assert sorted(names) == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0").dtype == np.int32

    result = tp.infer("simple", simple_tensors(a, b), None)
    assert sorted(tp.response(result)[2]) == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_simple_output_subset(tp):
    a, b = ints([1, 16], 3), ints([1, 16], 4)
    result = tp.infer("simple", simple_tensors(a, b), ["OUTPUT1"])
    assert tp.response(result)[2] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("version", ["1", "2"])
def test_simple_versions(tp, version):
    a, b = ints([1, 16], 5), ints([1, 16], 6)
    result = tp.infer("simple", simple_tensors(a, b), ["OUTPUT0", "OUTPUT1"], version=version, request_id="v")
    assert tp.response(result)[:2] == ("v", version)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def set_label(server, model, label, version):
    import json
    import urllib.request
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/labels/{label}", method="PUT",
                                 data=json.dumps({"version": version}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_labels_route_unmodified_clients(tp, server):
    """A version label works wherever tritonclient passes a model_version, on every transport."""
    assert set_label(server, "simple", "stable", "1")["labels"]["stable"] == 1
    a, b = ints([1, 16], 7), ints([1, 16], 8)
    result = tp.infer("simple", simple_tensors(a, b), ["OUTPUT0"], version="stable", request_id="l")
    assert tp.response(result)[:2] == ("l", "1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert tp.client.is_model_ready("simple", "stable")
    with pytest.raises(InferenceServerException):
        tp.infer("simple", simple_tensors(a, b), ["OUTPUT0"], version="no-such-label")


def test_simple_batch(tp):
    a, b = ints([3, 16], 7), ints([3, 16], 8)
    result = tp.infer("simple", simple_tensors(a, b), ["OUTPUT0", "OUTPUT1"])
    assert result.as_numpy("OUTPUT0").shape == (3, 16)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def random_tensor(datatype, shape, rng, utf8_only):
    if datatype == "BOOL":
        return rng.random(shape) < 0.5
    if datatype == "BYTES":
        pool = [b"", b"a", "h\u00e9llo \u2603".encode(), b"x" * 300, b"nul\x00inside"]
        if not utf8_only:
            pool += [b"\xff\xfe\x00\x80", bytes(range(256))]
        return np.array([pool[i] for i in rng.integers(0, len(pool), np.prod(shape))], dtype=np.object_).reshape(shape)
    if datatype == "BF16":
        bits = rng.standard_normal(shape).astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
        return bits.view(np.float32)
    dtype = triton_to_np_dtype(datatype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 1000).astype(dtype)


def test_datatypes_identity(tp):
    rng = np.random.default_rng(11)
    sent = {f"IN_{d}": (random_tensor(d, [3, 4], rng, utf8_only=tp.json), d) for d in DATATYPES}
    datatypes = {f"OUT_{d}": d for d in DATATYPES}
    result = tp.infer("datatypes", sent, list(datatypes), datatypes=datatypes)
    for d in DATATYPES:
        want, got = sent[f"IN_{d}"][0], result.as_numpy(f"OUT_{d}")
        assert got is not None, d
        if d == "BYTES" and tp.json:
            want = np.array([v.decode() for v in want.flat], dtype=np.object_).reshape(want.shape)
        assert got.shape == want.shape, d
        assert got.dtype == want.dtype, (d, got.dtype, want.dtype)
        assert np.array_equal(got, want), f"{d}: sent {want!r}, got {got!r}"


def test_classifier_matches_onnxruntime(tp):
    features = np.random.default_rng(13).standard_normal([5, 16]).astype(np.float32)
    session = ort.InferenceSession(str(MODELS / "classifier/1/model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(["probabilities"], {"features": features})[0]
    result = tp.infer("classifier", {"features": (features, "FP32")}, ["probabilities"])
    got = result.as_numpy("probabilities")
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_statistics(tp):
    n = 5
    before = tp.stats("simple")
    a, b = ints([2, 16], 9), ints([2, 16], 10)
    for _ in range(n):
        tp.infer("simple", simple_tensors(a, b), ["OUTPUT0"])
    after = tp.stats("simple")
    assert after["success"] - before["success"] >= n, (before, after)
    assert after["inference_count"] - before["inference_count"] >= 2 * n, (before, after)
    assert after["execution_count"] > 0 and after["inference_count"] > 0, after


def expect_error(call, *needles):
    with pytest.raises(InferenceServerException) as info:
        call()
    message = info.value.message()
    assert message, f"empty error message (status {info.value.status()})"
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in error message {message!r}"
    return info.value


def test_errors(tp):
    a, b = ints([1, 16], 11), ints([1, 16], 12)

    e = expect_error(lambda: tp.infer("no_such_model", simple_tensors(a, b), ["OUTPUT0"]), "no_such_model")
    assert e.status() == ("StatusCode.NOT_FOUND" if tp.grpc else "404"), (e.status(), e.message())

    wrong_type = {"INPUT0": (a.astype(np.float32), "FP32"), "INPUT1": (b, "INT32")}
    e = expect_error(lambda: tp.infer("simple", wrong_type, ["OUTPUT0"]), "INPUT0")
    assert "FP32" in e.message() or "INT32" in e.message(), e.message()
    assert e.status() == ("StatusCode.INVALID_ARGUMENT" if tp.grpc else "400"), (e.status(), e.message())

    short = ints([1, 8], 13)
    e = expect_error(lambda: tp.infer("simple", simple_tensors(short, short), ["OUTPUT0"]), "INPUT0")
    assert "shape" in e.message().lower() or "8" in e.message(), e.message()
    assert e.status() == ("StatusCode.INVALID_ARGUMENT" if tp.grpc else "400"), (e.status(), e.message())

    too_big = ints([9, 16], 14)
    e = expect_error(lambda: tp.infer("simple", simple_tensors(too_big, too_big), ["OUTPUT0"]))
    assert e.status() == ("StatusCode.INVALID_ARGUMENT" if tp.grpc else "400"), (e.status(), e.message())

    expect_error(lambda: tp.infer("simple", simple_tensors(a, b), ["OUTPUT0"], version="7"))

    result = tp.infer("simple", simple_tensors(a, b), ["OUTPUT0"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def test_grpc_stream(server):
    tp = Transport("grpc", server)
    results = queue.Queue()
    tp.client.start_stream(callback=lambda result, error: results.put((result, error)))
    sent, received = {}, {}
    try:
        for i in range(6):
            a, b = ints([1 + i % 3, 16], 100 + i), ints([1 + i % 3, 16], 200 + i)
            sent[f"s{i}"] = (a, b)
            tp.client.async_stream_infer("simple", tp.inputs(simple_tensors(a, b)), request_id=f"s{i}")
        for _ in sent:
            result, error = results.get(timeout=10)
            assert error is None, error
            received[result.get_response().id] = (result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))
    finally:
        tp.client.stop_stream()
        tp.client.close()
    assert set(received) == set(sent)
    for rid, (a, b) in sent.items():
        np.testing.assert_array_equal(received[rid][0], a + b)
        np.testing.assert_array_equal(received[rid][1], a - b)
