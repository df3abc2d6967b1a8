import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 30


@dataclass
class Server:
    http_url: str
    grpc_url: str
    metrics_url: str
    log: Path

    def log_text(self):
        return self.log.read_text(errors="replace")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def is_ready(http_url):
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(proc, srv):
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not is_ready(srv.http_url):
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before ready; log:\n{srv.log_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready after {READY_TIMEOUT_S} s; log:\n{srv.log_text()}")
        time.sleep(0.1)


def launch(tmp_path_factory, extra_args=(), repository=None):
    """Starts the server on free 127.0.0.1 ports with `extra_args` on `repository` (default: the example models),
    yields it once ready, stops it with SIGTERM."""
    binary = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target/debug/switchyard"))
    if not binary.is_absolute():
        binary = ROOT / binary
    assert binary.is_file(), f"server binary not found: {binary} (cargo build -p switchyard, or set SWITCHYARD_BIN)"
    http, grpc, metrics = free_ports(3)
    log = tmp_path_factory.mktemp("server") / "switchyard.log"
    args = [
        str(binary), "--model-repository", str(repository or ROOT / "models"),
        "--http-address", "127.0.0.1", "--http-port", str(http),
        "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics),
        "--model-control-mode", "none",
        "--shutdown-drain-secs", "0",
        *extra_args,
    ]
    srv = Server(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"127.0.0.1:{metrics}", log)
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, srv)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    yield srv
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"server did not exit within {EXIT_TIMEOUT_S} s of SIGTERM; log:\n{srv.log_text()}")
    assert proc.returncode == 0, f"server exited with {proc.returncode} after SIGTERM; log:\n{srv.log_text()}"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    yield from launch(tmp_path_factory)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(srv, Server):
        report.sections.append(("switchyard log (last 100 lines)", "\n".join(srv.log_text().splitlines()[-100:])))
