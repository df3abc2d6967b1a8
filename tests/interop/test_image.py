"""The container image without a Docker engine: what the Dockerfile's runtime stage holds, started as the image would be.

The build stage's one step (scripts/image-tree.sh) lays out the image's files; the runtime stage's base is a Debian
root filesystem made with debootstrap for the stage's FROM suite, on which the stage's own RUN lines are executed in a
chroot. The two are stacked as image layers (an overlay mount with no upper layer, so the root filesystem is read-only
as in the Kubernetes Deployment, with a tmpfs on /tmp as its emptyDir), and the ENTRYPOINT is started with the stage's
ENV and USER in fresh network, mount and PID namespaces: the image's default ports, nothing from the host.

Debug binaries by default (the test build); scripts/image-check.sh runs this with the release build the image ships.
Needs root (mounts and namespaces); the base filesystem is cached under .image/ keyed by the runtime stage's text.
"""
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

CACHE = ROOT / ".image"
PROFILE = os.environ.get("SWITCHYARD_IMAGE_PROFILE", "debug")
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
READY_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 40

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the image check mounts and enters namespaces: needs root")


def dockerfile_stages():
    """The Dockerfile's stages as lists of (instruction, argument), continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    stages = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, argument = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, " ".join(argument.split())))
    return stages


def runtime_stage():
    stages = dockerfile_stages()
    assert len(stages) == 2, "the Dockerfile has a build stage and a runtime stage"
    build, runtime = stages
    assert ("RUN", "bash scripts/image-tree.sh /out") in build, \
        "the build stage's files come from scripts/image-tree.sh, which this test runs"
    copies = [arg for ins, arg in runtime if ins == "COPY"]
    assert copies == ["--from=build /out/ /"], f"the runtime stage copies only the build stage's tree: {copies}"
    spec = {"from": runtime[0][1], "run": [arg for ins, arg in runtime if ins == "RUN"], "env": {}}
    for ins, arg in runtime:
        if ins == "ENV":
            spec["env"].update(dict(pair.split("=", 1) for pair in shlex.split(arg)))
        elif ins in ("USER", "ENTRYPOINT", "EXPOSE"):
            spec[ins.lower()] = arg
        elif ins == "HEALTHCHECK":
            spec["healthcheck"] = json.loads(arg.split(" CMD ", 1)[1])
    spec["entrypoint"] = json.loads(spec["entrypoint"])
    return spec


def base_rootfs(spec):
    """debootstrap of the FROM suite with the runtime stage's RUN lines applied, cached by the stage's text."""
    image, _, tag = spec["from"].partition(":")
    assert image == "debian", f"the runtime stage starts from a Debian image: {spec['from']}"
    suite = tag.split("-")[0]
    key = hashlib.sha256(json.dumps([spec["from"], spec["run"], MIRROR]).encode()).hexdigest()[:16]
    root = CACHE / f"rootfs-{suite}-{key}"
    if (root / ".complete").exists():
        return root
    for stale in CACHE.glob("rootfs-*"):  # made for an earlier runtime stage
        shutil.rmtree(stale, ignore_errors=True)
    partial = CACHE / f"partial-{key}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run(["debootstrap", "--variant=minbase", suite, str(partial), MIRROR],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    shutil.copy("/etc/resolv.conf", partial / "etc/resolv.conf")  # for the RUN lines' apt-get update
    for command in spec["run"]:
        script = f"mount -t proc proc {partial}/proc && exec chroot {partial} /bin/sh -ec {shlex.quote(command)}"
        result = subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", script], capture_output=True, text=True,
                                timeout=600, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                  "DEBIAN_FRONTEND": "noninteractive"})
        assert result.returncode == 0, f"runtime stage RUN failed: {command}\n{result.stderr[-3000:]}"
    (partial / ".complete").touch()
    partial.rename(root)
    return root


def passwd_entry(root, user):
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user or fields[2] == user:
            return int(fields[2]), int(fields[3])
    pytest.fail(f"USER {user} is not in the image's /etc/passwd")


class Container:
    """The ENTRYPOINT in its own namespaces; `exec` runs a command inside it as the image's user."""

    def __init__(self, root, tree, spec, log):
        self.spec = spec
        self.uid, self.gid = passwd_entry(root, spec["user"])
        self.mount = CACHE / "mnt"
        self.mount.mkdir(parents=True, exist_ok=True)
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **spec["env"]}
        env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items())
        entry = " ".join(shlex.quote(a) for a in spec["entrypoint"])
        m = shlex.quote(str(self.mount))
        script = (
            "set -e; ip link set lo up; "
            f"mount -t overlay overlay -o lowerdir={shlex.quote(str(tree))}:{shlex.quote(str(root))} {m}; "
            f"mount -t proc proc {m}/proc; mount -t tmpfs -o mode=1777 tmpfs {m}/tmp; "
            f"exec chroot --userspec={self.uid}:{self.gid} {m} /usr/bin/env -i {env_args} {entry}"
        )
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child",
                                          "sh", "-c", script], stdout=out, stderr=subprocess.STDOUT)
        self.pid = self._entrypoint_pid()

    def _entrypoint_pid(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            try:
                pids = children.read_text().split()
                if pids and Path(f"/proc/{pids[0]}/exe").resolve().name == Path(self.spec["entrypoint"][0]).name:
                    return int(pids[0])
            except OSError:
                pass
            if self.proc.poll() is not None:
                pytest.fail(f"the container exited with {self.proc.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)
        pytest.fail(f"the entrypoint did not start:\n{self.log.read_text()}")

    def exec(self, *argv, timeout=30):
        """Runs argv inside the container (its root, mounts, network and PID namespace) as the image's user."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "-r", "-w",
                               "-S", str(self.uid), "-G", str(self.gid), "/usr/bin/env", "-i",
                               *[f"{k}={v}" for k, v in self.env.items()], *argv],
                              capture_output=True, text=True, timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    spec = runtime_stage()
    root = base_rootfs(spec)
    tree = CACHE / f"tree-{PROFILE}"
    subprocess.run(["bash", str(ROOT / "scripts/image-tree.sh"), str(tree)], check=True, cwd=ROOT,
                   env={**os.environ, "PROFILE": PROFILE}, stdout=subprocess.DEVNULL, timeout=1800)
    c = Container(root, tree, spec, tmp_path_factory.mktemp("image") / "container.log")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while c.exec(*c.spec["healthcheck"], timeout=10).returncode != 0:
            if c.proc.poll() is not None:
                pytest.fail(f"the container exited with {c.proc.returncode}:\n{c.log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the health check did not pass in {READY_TIMEOUT_S} s:\n{c.log.read_text()}")
            time.sleep(0.2)
        yield c
    finally:
        c.stop()


def test_binaries_find_their_libraries_in_the_image(container):
    lib = container.env["SWITCHYARD_ORT_LIBRARY"]
    for path in ("/usr/local/bin/switchyard", "/usr/local/bin/switchyard-client", lib):
        out = container.exec("ldd", path)
        assert out.returncode == 0 and "not found" not in out.stdout, f"{path}:\n{out.stdout}{out.stderr}"


def test_serves_the_example_models_on_the_exposed_ports_as_its_user(container):
    status = Path(f"/proc/{container.pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert int(uids) == container.uid != 0, "the server runs as the image's non-root USER"
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/base/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (container.uid, container.gid), \
        "the Deployment runs the image as the image's own user and group"
    root_mount = container.exec("sh", "-c", "grep ' / ' /proc/self/mounts").stdout.split()
    assert "ro" in root_mount[3].split(","), f"the root filesystem is read-only: {root_mount}"
    listening = next(json.loads(line)["fields"] for line in container.log.read_text().splitlines()
                     if line.startswith("{") and '"listening"' in line)
    ports = sorted(int(v.rsplit(":", 1)[1]) for k, v in listening.items() if k in ("http", "grpc", "metrics"))
    assert ports == sorted(int(p) for p in container.spec["expose"].split()), listening

    ones = ",".join(["1"] * 16)
    for protocol in ("http", "grpc"):
        out = container.exec("switchyard-client", "--protocol", protocol, "infer", "simple",
                             "--input", f"INPUT0:INT32:1x16:{ones}", "--input", f"INPUT1:INT32:1x16:{ones}")
        assert out.returncode == 0, out.stderr
        outputs = {o["name"]: o["data"] for o in json.loads(out.stdout)["outputs"]}
        assert outputs == {"OUTPUT0": [2] * 16, "OUTPUT1": [0] * 16}, out.stdout
    models = container.exec("switchyard-client", "models")
    assert models.returncode == 0 and "classifier" in models.stdout, models.stdout + models.stderr


def test_sigterm_stops_it_cleanly(container):
    assert container.stop() == 0, container.log.read_text()[-3000:]
    assert "shutting down" in container.log.read_text()
