"""Migrations from Triton, with the unmodified tritonclient: models Triton loads (a BYTES input cast to a number
inside the graph, a scalar described as dims [1]), Triton's raw binary requests, BYTES outputs JSON cannot
carry, duplicate outputs, the unknown-model wording clients look for, and the extension status calls."""

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import ROOT, launch

TIMEOUT_S = 10


def write_model(repo, name, graph, config):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.onnx").write_bytes(m.SerializeToString())
    (repo / name / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def compat_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for name in ("simple", "datatypes", "classifier"):
        shutil.copytree(ROOT / "models" / name, repo / name)
    # A string parsed as a number inside the graph: an empty string fails the Cast.
    write_model(repo, "strcast", helper.make_graph(
        [helper.make_node("Cast", ["TEXT"], ["NUMBER"], to=TensorProto.INT64)], "strcast",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("NUMBER", TensorProto.INT64, ["batch", 1])]),
        'name: "strcast"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
        'input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "NUMBER" data_type: TYPE_INT64 dims: [ 1 ] } ]\n')
    # A scalar in the model file, dims [1] in the config (how Triton repositories describe it).
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    write_model(repo, "scalar", helper.make_graph(
        [helper.make_node("Mul", ["X", "two"], ["Y"])], "scalar",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [])], initializer=[two]),
        'name: "scalar"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    yield from launch(tmp_path_factory, repository=repo)


@pytest.fixture(scope="module")
def clients(compat_server):
    http = httpclient.InferenceServerClient(compat_server.http_url, network_timeout=TIMEOUT_S)
    grpc = grpcclient.InferenceServerClient(compat_server.grpc_url)
    yield {"http": (httpclient, http), "grpc": (grpcclient, grpc)}
    http.close()
    grpc.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_string_input_cast_to_a_number_loads_and_serves(clients, protocol):
    mod, client = clients[protocol]
    assert client.is_model_ready("strcast")
    text = mod.InferInput("TEXT", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"42"], [b"-7"]], dtype=np.object_))
    result = client.infer("strcast", [text])
    assert result.as_numpy("NUMBER").tolist() == [[42], [-7]]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_scalar_described_as_dims_1_is_served(clients, protocol):
    mod, client = clients[protocol]
    x = mod.InferInput("X", [1], "FP32")
    x.set_data_from_numpy(np.array([1.5], dtype=np.float32))
    result = client.infer("scalar", [x])
    assert result.as_numpy("Y").tolist() == [3.0]


def test_a_raw_binary_request_is_the_single_inputs_bytes(compat_server):
    row = np.arange(16, dtype=np.float32) / 10
    req = urllib.request.Request(f"http://{compat_server.http_url}/v2/models/classifier/infer",
                                 data=row.tobytes(), headers={"Inference-Header-Content-Length": "0"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
        body = json.load(r)
    assert body["outputs"][0]["shape"] == [1, 4]
    req = urllib.request.Request(f"http://{compat_server.http_url}/v2/models/simple/infer",
                                 data=b"\0" * 128, headers={"Inference-Header-Content-Length": "0"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=TIMEOUT_S)
    assert e.value.code == 400
    assert "needs a model with one input" in json.load(e.value)["error"]


def datatypes_inputs(mod, text):
    inputs = []
    for name, dtype in [("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32),
                        ("UINT64", np.uint64), ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32),
                        ("INT64", np.int64), ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64)]:
        t = mod.InferInput(f"IN_{name}", [1, 4], name)
        t.set_data_from_numpy(np.zeros([1, 4], dtype=dtype))
        inputs.append(t)
    bf16 = mod.InferInput("IN_BF16", [1, 4], "BF16")
    bf16.set_data_from_numpy(np.zeros([1, 4], dtype=np.float32), binary_data=True)
    inputs.append(bf16)
    b = mod.InferInput("IN_BYTES", [1, 4], "BYTES")
    b.set_data_from_numpy(np.array([text], dtype=np.object_))
    inputs.append(b)
    return inputs


def test_bytes_that_are_not_utf8_are_refused_as_json_and_exact_as_binary(clients):
    mod, client = clients["http"]
    text = [b"ok", b"\xff\xfe", b"", "é".encode()]
    as_json = [httpclient.InferRequestedOutput("OUT_BYTES", binary_data=False)]
    with pytest.raises(InferenceServerException) as e:
        client.infer("datatypes", datatypes_inputs(mod, text), outputs=as_json)
    assert "not valid UTF-8" in str(e.value) and "binary" in str(e.value)
    as_binary = [httpclient.InferRequestedOutput("OUT_BYTES", binary_data=True)]
    result = client.infer("datatypes", datatypes_inputs(mod, text), outputs=as_binary)
    assert result.as_numpy("OUT_BYTES").tolist() == [text]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_duplicate_outputs_and_unknown_models_get_tritons_words(clients, protocol):
    mod, client = clients[protocol]
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        t = mod.InferInput(name, [1, 16], "INT32")
        t.set_data_from_numpy(np.ones([1, 16], dtype=np.int32))
        inputs.append(t)
    twice = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT0")]
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", inputs, outputs=twice)
    assert "output 'OUTPUT0' already exists in request" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        client.infer("nope", inputs)
    assert e.value.message().startswith("Request for unknown model: 'nope'"), e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", inputs, model_version="9")
    assert e.value.message().startswith("Request for unknown model: 'simple' version 9"), e.value.message()


def test_extension_status_calls_answer_over_http(clients):
    _, client = clients["http"]
    assert client.get_system_shared_memory_status() == []
    assert client.get_cuda_shared_memory_status() == []
    assert client.get_trace_settings() == {}
    assert client.get_trace_settings(model_name="simple") == {}
    client.unregister_system_shared_memory()
    with pytest.raises(InferenceServerException) as e:
        client.register_system_shared_memory("region", "/key", 64)
    assert "not supported" in str(e.value)
