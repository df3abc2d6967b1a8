"""Three replicas sharing one repository behind HAProxy (HTTP and gRPC/h2c backends, health checks on
/v2/health/ready): a rolling restart under load (SIGTERM to one replica at a time, a new one in its place) fails no
request, and HAProxy marks each draining replica DOWN before it exits, because its readiness fell first; then a
new version in the shared repository (poll mode) is served by every replica within the poll interval, with no
failed request. `scripts/haproxy-rolling.sh` runs it alone and prints the numbers."""

import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import ROOT, Server, free_ports, wait_ready

HAPROXY = "/usr/sbin/haproxy"
POLL_SECS = 1
DRAIN_SECS = 3
WAIT_S = 60


def replica(binary, repo, ports, log):
    http, grpc, metrics = ports
    args = [str(binary), "--model-repository", str(repo), "--model-control-mode", "poll",
            "--repository-poll-secs", str(POLL_SECS), "--shutdown-drain-secs", str(DRAIN_SECS),
            "--http-address", "127.0.0.1", "--http-port", str(http),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc),
            "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics)]
    out = open(log, "ab")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"127.0.0.1:{metrics}", log)
    wait_ready(proc, srv)
    return proc, srv


def haproxy_config(front_http, front_grpc, stats, replicas):
    servers_http = "\n".join(f"    server r{i} 127.0.0.1:{p[0]} check" for i, p in enumerate(replicas))
    servers_grpc = "\n".join(f"    server r{i} 127.0.0.1:{p[1]} proto h2 check port {p[0]} check-proto h1"
                             for i, p in enumerate(replicas))
    return f"""
global
    log stderr format raw local0 info
    stats socket {stats} level admin
defaults
    mode http
    log global
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server inter 250ms fall 1 rise 2
frontend http
    bind 127.0.0.1:{front_http}
    default_backend replicas_http
frontend grpc
    bind 127.0.0.1:{front_grpc} proto h2
    default_backend replicas_grpc
backend replicas_http
{servers_http}
backend replicas_grpc
{servers_grpc}
"""


class Load:
    """Two threads, one per protocol, sending `simple` requests through HAProxy until stopped."""

    def __init__(self, http_url, grpc_url):
        self.stop = threading.Event()
        self.counts = {"http": [0, 0], "grpc": [0, 0]}
        self.errors = []
        self.versions = {"http": [], "grpc": []}
        self.threads = [threading.Thread(target=self.run, args=(m, u, k), daemon=True)
                        for m, u, k in ((httpclient, http_url, "http"), (grpcclient, grpc_url, "grpc"))]

    def run(self, mod, url, kind):
        client = mod.InferenceServerClient(url)
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(np.ones_like(a))
        while not self.stop.is_set():
            try:
                r = client.infer("simple", inputs)
                self.counts[kind][0] += 1
                self.versions[kind].append((time.monotonic(), r.get_response()["model_version"]
                                            if kind == "http" else r.get_response().model_version))
            except Exception as e:  # every failure is counted and shown
                self.counts[kind][1] += 1
                self.errors.append(f"{kind}: {e}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def wait_for(what, cond, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)



def test_rolling_restart_and_new_version_behind_haproxy(tmp_path):
    assert os.path.exists(HAPROXY), "haproxy not installed (scripts/setup-system.sh installs it)"
    binary = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target/debug/switchyard"))
    repo = tmp_path / "models"
    (repo / "simple/1").mkdir(parents=True)
    shutil.copy(ROOT / "models/simple/config.pbtxt", repo / "simple/config.pbtxt")
    shutil.copy(ROOT / "models/simple/1/model.onnx", repo / "simple/1/model.onnx")
    ports = [free_ports(3) for _ in range(3)]
    logs = [tmp_path / f"replica{i}.log" for i in range(3)]
    procs = [replica(binary, repo, p, log) for p, log in zip(ports, logs)]
    front_http, front_grpc = free_ports(2)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(front_http, front_grpc, tmp_path / "stats.sock", ports))
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    hlog = tmp_path / "haproxy.log"
    lb = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=open(hlog, "wb"), stderr=subprocess.STDOUT)
    report = {}
    try:
        wait_for("HAProxy to answer", lambda: _ready(f"127.0.0.1:{front_http}"))
        started = time.monotonic()
        with Load(f"127.0.0.1:{front_http}", f"127.0.0.1:{front_grpc}") as load:
            wait_for("some load", lambda: min(c[0] for c in load.counts.values()) >= 20)
            for i in range(3):
                proc, _ = procs[i]
                down_before = hlog.read_text().count(f"r{i} is DOWN")
                proc.send_signal(signal.SIGTERM)
                # Readiness falls first: HAProxy takes both backends of the replica out while it still runs.
                wait_for(f"HAProxy to mark r{i} DOWN", lambda: hlog.read_text().count(f"r{i} is DOWN") >= down_before + 2)
                assert proc.poll() is None, f"replica {i} exited before HAProxy took it out"
                proc.wait(WAIT_S)
                assert proc.returncode == 0
                procs[i] = replica(binary, repo, ports[i], logs[i])
                up = hlog.read_text().count(f"r{i} is UP")
                wait_for(f"HAProxy to mark r{i} UP", lambda: hlog.read_text().count(f"r{i} is UP") >= up + 2)
            report["rolling_restart_s"] = round(time.monotonic() - started, 1)
            # A new version in the shared repository: every replica serves it within the poll interval.
            shutil.copytree(ROOT / "models/simple/2", repo / "simple/2")
            appeared = time.monotonic()
            wait_for("every replica to serve version 2", lambda: all(
                _default_version(srv.http_url) == "2" for _, srv in procs), timeout=10 * POLL_SECS + 30)
            report["converge_s"] = round(time.monotonic() - appeared, 2)
            wait_for("load on version 2", lambda: any(v == "2" for _, v in load.versions["http"][-5:]))
        report["requests"] = sum(c[0] + c[1] for c in load.counts.values())
        report["failures"] = sum(c[1] for c in load.counts.values())
        print(f"haproxy rolling restart: {report}")
        assert report["failures"] == 0, load.errors[:10]
        assert report["converge_s"] <= 2 * POLL_SECS + 10, report
    finally:
        lb.terminate()
        lb.wait(10)
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(WAIT_S)


def _ready(url):
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _default_version(url):
    import json
    try:
        with urllib.request.urlopen(f"http://{url}/v2/models/simple", timeout=2) as r:
            meta = json.load(r)
    except OSError:
        return None
    return (meta.get("parameters") or {}).get("default_version")
