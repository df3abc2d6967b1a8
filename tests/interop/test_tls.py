"""Triton's own clients over TLS: tritonclient.grpc with ssl=True and root /
client certificates, tritonclient.http with a CA file. Certificates are made
by the test with openssl; nothing secret is committed."""

import signal
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXIT_TIMEOUT_S, READY_TIMEOUT_S, ROOT, free_ports


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path):
    """A CA, a server certificate for 127.0.0.1 / localhost, and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ["server", "client"]:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    import os
    d = tmp_path_factory.mktemp("pki")
    make_pki(d)
    binary = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target/debug/switchyard"))
    http, grpc, metrics = free_ports(3)
    log = d / "switchyard.log"
    args = [
        str(binary), "--model-repository", str(ROOT / "models"),
        "--http-address", "127.0.0.1", "--http-port", str(http),
        "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics),
        "--shutdown-drain-secs", "0",
        "--http-use-ssl", "--http-server-cert", str(d / "server.crt"), "--http-server-key", str(d / "server.key"),
        "--grpc-use-ssl-mutual", "--grpc-server-cert", str(d / "server.crt"),
        "--grpc-server-key", str(d / "server.key"), "--grpc-root-cert", str(d / "ca.crt"),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}", ssl=True,
                                              ssl_context_factory=lambda: ssl.create_default_context(
                                                  cafile=str(d / "ca.crt")))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if client.is_server_ready():
                break
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"TLS server not ready; log:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    yield d, http, grpc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(EXIT_TIMEOUT_S) == 0


def simple_inputs(mod):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.ones_like(a))
    return inputs, a + 1


def test_http_client_with_a_ca_file(tls_server):
    d, http, _ = tls_server
    client = httpclient.InferenceServerClient(
        f"127.0.0.1:{http}", ssl=True,
        ssl_context_factory=lambda: ssl.create_default_context(cafile=str(d / "ca.crt")))
    inputs, want = simple_inputs(httpclient)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), want)


def test_grpc_client_with_root_and_client_certificates(tls_server):
    d, _, grpc = tls_server
    client = grpcclient.InferenceServerClient(
        f"127.0.0.1:{grpc}", ssl=True, root_certificates=str(d / "ca.crt"),
        private_key=str(d / "client.key"), certificate_chain=str(d / "client.crt"))
    assert client.is_server_ready()
    inputs, want = simple_inputs(grpcclient)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), want)


def test_grpc_client_without_a_certificate_is_refused(tls_server):
    d, _, grpc = tls_server
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}", ssl=True, root_certificates=str(d / "ca.crt"))
    with pytest.raises(InferenceServerException):
        client.is_server_ready(client_timeout=10)
