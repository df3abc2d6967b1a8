"""A model repository holding one model's files (KServe's /mnt/models), served under `--model-name`, with the
ports KServe expects passed through the usual flags; tritonclient infers on both protocols."""

import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import ROOT, launch


@pytest.fixture(scope="module", params=["bare", "directory"])
def single(request, tmp_path_factory):
    mnt = tmp_path_factory.mktemp("mnt-models")
    if request.param == "bare":
        shutil.copy(ROOT / "models/simple/1/model.onnx", mnt / "model.onnx")
    else:
        (mnt / "1").mkdir()
        shutil.copy(ROOT / "models/simple/1/model.onnx", mnt / "1/model.onnx")
        config = (ROOT / "models/simple/config.pbtxt").read_text()
        (mnt / "config.pbtxt").write_text("".join(l + "\n" for l in config.splitlines() if not l.startswith("name:")))
    yield from launch(tmp_path_factory, ["--model-name", "foo"], repository=mnt)


def test_single_model_layout_is_served_under_the_name(single):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 5, dtype=np.int32)
    for mod, url in ((httpclient, single.http_url), (grpcclient, single.grpc_url)):
        client = mod.InferenceServerClient(url)
        assert client.is_model_ready("foo")
        inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("foo", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        assert not client.is_model_ready("simple")
    index = httpclient.InferenceServerClient(single.http_url).get_model_repository_index()
    assert [(m["name"], m["version"]) for m in index] == [("foo", "1")]
