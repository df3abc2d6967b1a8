"""switchyard-client traffic get|set|report|clear against a running server: a shadow set
through the CLI mirrors requests, its report counts the pairs, clearing restores the file."""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, launch

CLI_TIMEOUT_S = 30
WAIT_S = 30


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    # A server of its own: the override set here must not reach other tests.
    yield from launch(tmp_path_factory)


def client_binary():
    server = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target/debug/switchyard"))
    if not server.is_absolute():
        server = ROOT / server
    binary = server.with_name("switchyard-client")
    assert binary.is_file(), f"client binary not found: {binary} (cargo build -p switchyard-client)"
    return binary


def cli(server, *args):
    out = subprocess.run(
        [str(client_binary()), "--url", f"http://{server.http_url}", *args],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return json.loads(out.stdout)


def infer(server, request_id):
    body = json.dumps({"id": request_id, "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]}).encode()
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/simple/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def test_a_shadow_set_through_the_cli_is_mirrored_and_reported(own_server):
    before = cli(own_server, "traffic", "get", "simple")
    assert before["source"] in ("none", "file")
    policy = json.dumps({"default": 1, "shadow": {"target": 2, "compare": {"top_k": 1}}})
    after = cli(own_server, "traffic", "set", "simple", policy)
    assert after["source"] == "override" and after["policy"]["shadow"]["target"] == 2
    for i in range(8):
        assert infer(own_server, f"cli-{i}")["model_version"] == "1"
    deadline = time.monotonic() + WAIT_S
    while True:
        report = cli(own_server, "traffic", "report", "simple")
        if report["totals"]["pairs"] == 8 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert report["active"] is True
    assert report["totals"]["outcomes"] == {"match": 8}, report
    assert report["outputs"]["OUTPUT0"]["exact_match_rate"] == 1.0
    cleared = cli(own_server, "traffic", "clear", "simple")
    assert cleared["source"] == before["source"]
    assert cli(own_server, "traffic", "report", "simple")["active"] is False
