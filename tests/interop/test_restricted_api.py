"""Triton's restricted APIs through unmodified tritonclient: the restricted
inference group is served when the client passes the header (`headers=`),
refused with Triton's messages when it does not; health stays open."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import launch

KEY, VALUE = "infer-key", "infer-secret-value"


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    yield from launch(tmp_path_factory, [
        "--http-restricted-api", f"inference:{KEY}={VALUE}",
        "--grpc-restricted-protocol", f"inference:{KEY}={VALUE}",
    ])


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_restricted_inference_needs_the_header(restricted, kind):
    mod = grpcclient if kind == "grpc" else httpclient
    client = mod.InferenceServerClient(restricted.grpc_url if kind == "grpc" else restricted.http_url)
    # gRPC carries the key with Triton's prefix.
    headers = {f"triton-grpc-protocol-{KEY}" if kind == "grpc" else KEY: VALUE}
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    try:
        assert client.is_server_live() and client.is_server_ready(), "health stays open"
        result = client.infer("simple", inputs, headers=headers)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)

        with pytest.raises(InferenceServerException) as refused:
            client.infer("simple", inputs)
        if kind == "grpc":
            assert refused.value.status() == "StatusCode.UNAVAILABLE"
            assert "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'" in str(refused.value)
        else:
            assert refused.value.status() == "403"
            assert "This API is restricted, expecting header 'infer-key'" in str(refused.value)
        with pytest.raises(InferenceServerException):
            client.infer("simple", inputs, headers={next(iter(headers)): "wrong"})
        # Unrestricted groups need nothing.
        assert client.get_model_metadata("simple")
    finally:
        client.close()
