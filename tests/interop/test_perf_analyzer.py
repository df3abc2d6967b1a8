import re
import subprocess
from pathlib import Path

import pytest

PERF_ANALYZER = Path(__file__).resolve().parents[2] / "scripts/perf_analyzer"
WINDOW = ["-p", "500", "-s", "100", "--max-trials", "10"]
TIMEOUT_S = 60


def perf_analyzer(*args):
    cmd = [str(PERF_ANALYZER), *args, *WINDOW]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"perf_analyzer did not finish within {TIMEOUT_S} s: {' '.join(cmd)}\n{e.stdout or ''}")
    output = run.stdout + run.stderr
    summary = output[output.find("Inferences/Second vs."):] if "Inferences/Second vs." in output else output
    print(f"\n$ {' '.join(cmd)}\n{summary}")
    assert run.returncode == 0, f"perf_analyzer exited with {run.returncode}:\n{output}"
    return output


def check(output, concurrencies, batch=1):
    throughput = {int(c): float(t) for c, t in
                  re.findall(r"^Concurrency: (\d+), throughput: ([\d.]+) infer/sec", output, re.M)}
    assert sorted(throughput) == list(concurrencies), output
    assert all(t > 0 for t in throughput.values()), throughput
    assert output.count("Server: ") == len(concurrencies), output
    counts = [(int(i), int(e), int(s)) for i, e, s in re.findall(
        r"Inference count: (\d+)\s+Execution count: (\d+)\s+Successful request count: (\d+)", output)]
    assert len(counts) == len(concurrencies), output
    for inferences, executions, successes in counts:
        assert successes > 0 and executions > 0, output
        assert abs(inferences - batch * successes) <= batch * max(concurrencies), output


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_simple_concurrency(server, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    output = perf_analyzer("-m", "simple", "-u", url, "-i", protocol, "--concurrency-range", "1:4")
    check(output, range(1, 5))


def test_classifier_batch_grpc(server):
    output = perf_analyzer("-m", "classifier", "-u", server.grpc_url, "-i", "grpc", "-b", "4",
                           "--concurrency-range", "1:2")
    check(output, range(1, 3), batch=4)
