"""`iflearner-operator demo`, the README's first command, as a newcomer runs it: on a used machine,
after unclean stops, with jobs left in other namespaces, and `preview` beside it (simulated node);
and on the real node, where the federation trains for real.

This file runs after tests/integration/realnode/ (whose last test stops the session's real-node
cluster): only one real-node cluster can run on a host, and the real demo starts its own."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from kubernetes import client, config

from iflearner.toolchain import REPO_ROOT

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def _iflearner(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iflearner", *args], capture_output=True, text=True,
                          timeout=900, cwd=REPO_ROOT, env=env)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _demo(data_dir: Path, *flags: str, node: str = "kwok") -> subprocess.CompletedProcess[str]:
    return _iflearner("demo", "--data-dir", str(data_dir), "--timeout", "300", "--node", node, *flags)


def _job_in_another_namespace(kubeconfig: Path) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="elsewhere")))
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "party-a.yaml").read_text())
    manifest["metadata"]["namespace"] = "elsewhere"
    # A host of its own: the demo's party-a in `default` holds job1.a.party.iflearner.com.
    manifest["spec"]["host"] = "job2.a.party.iflearner.com"
    custom.create_namespaced_custom_object(GROUP, VERSION, "elsewhere", PLURAL, manifest)
    deadline = time.monotonic() + 180
    while (custom.get_namespaced_custom_object(GROUP, VERSION, "elsewhere", PLURAL, manifest["metadata"]["name"])
           .get("status", {}).get("phase")) != "Running":
        assert time.monotonic() < deadline, "the job in namespace elsewhere did not start"
        time.sleep(1)
    api.close()


def test_demo_is_rerunnable_from_any_state(tmp_path):
    data_dir = tmp_path / "demo"
    kubeconfig = data_dir / "cluster" / "kubeconfig"

    try:
        # 1. left running; `preview` with no flags compares with the operator's own stacks
        _ok(_demo(data_dir, "--keep"))
        env = {k: v for k, v in os.environ.items() if k not in ("PULUMI_CONFIG_PASSPHRASE", "IFLEARNER_BACKEND_URL")}
        preview = _iflearner("preview", str(REPO_ROOT / "examples" / "server.yaml"), "-o", "json",
                             "--kubeconfig", str(kubeconfig), env=env)
        report = json.loads(_ok(preview))
        # The job as the operator runs it: nothing at all would change.
        assert report["succeeded"], report
        assert not {op: n for op, n in report["changes"].items() if op not in ("same", "read") and n}, report
        assert "using the operator's backend" in preview.stderr, preview.stderr

        # 2. the cluster stops without `demo --down` (as a reboot would): the next demo starts clean
        _ok(_iflearner("cluster", "down", "--data-dir", str(data_dir / "cluster")))
        rerun = _ok(_demo(data_dir, "--keep"))
        assert "belongs to a cluster that is gone" in rerun, rerun

        # 3. `demo --down` with a job outside `default` deletes it too, and is idempotent
        _job_in_another_namespace(kubeconfig)
        down = _ok(_demo(data_dir, "--down"))
        assert "deleting 4 job(s) in every namespace" in down, down
        assert "bootstrap destroy failed" not in down, down
        assert not _processes_mentioning(str(data_dir)), "demo --down must leave no process behind"
        assert "nothing left to clean" in _ok(_demo(data_dir, "--down"))

        # 4. the README's first command, on this used machine
        result = _demo(data_dir)
        out = _ok(result)
        table = [line for line in out.splitlines() if line.startswith("iflearnerjob-")]
        assert len(table) == 3, out
        for row in table:
            assert " Running " in row and " True " in row, row
        assert "the federation is Running" in out
        assert "stopping the local control plane" in out
        assert not _processes_mentioning(str(data_dir)), "the demo must leave no process behind"
    finally:
        _demo(data_dir, "--down")  # whatever failed above, nothing is left running


def _server_log_problems(log: str, parties: list[str], epochs: int) -> list[str]:
    spec = importlib.util.spec_from_file_location("federation_local", REPO_ROOT / "bench" / "federation_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("federation_local", module)
    spec.loader.exec_module(module)
    return module.server_log_problems(log, parties, epochs)


def test_real_node_demo_trains_the_federation(tmp_path):
    """Part 1 of the real federation: the operator as a Pod, Traefik as the gateway, the workload image;
    parties reach the server at its host through the gateway with TLS, trusting only the mounted file."""
    sys.path.insert(0, str(Path(__file__).parent / "realnode"))
    from realnode_harness import wait_until_host_free

    wait_until_host_free()
    data_dir = Path("/tmp") / f"ifl-demo-{os.getpid()}"  # short: containerd's socket path is limited
    try:
        result = _demo(data_dir, node="real")
        out = _ok(result)
        epochs = int(re.search(r"--epochs=(\d+)", (REPO_ROOT / "examples/federation/party-a.yaml").read_text())[1])
        for party in ("client1", "client2"):
            for epoch in range(1, epochs + 1):
                assert f"{party} epoch {epoch}: loss" in out, f"no progress of {party} epoch {epoch}:\n{out[-3000:]}"
            assert re.search(rf"final metric of {party}: loss [0-9.]+, accuracy 0\.[0-9]+", out), out[-3000:]
        table = [line for line in out.splitlines() if line.startswith("iflearnerjob-")]
        assert len(table) == 3 and all(" Succeeded " in row for row in table), table
        server_log = (data_dir / "federation" / "iflearnerjob-server.log").read_text()
        assert not _server_log_problems(server_log, ["client1", "client2"], epochs), server_log[-3000:]
        png = Path(re.search(r"the metric per epoch, as a plot: (\S+)", out)[1])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        # installed the way a cluster gets its images: pushed to the node's registry, pulled by digest
        pulled = re.findall(r"the kubelet pulled (\S+) \(namespace (\S+)\)", out)
        for name, namespace in (("iflearner-operator", "iflearner-system"), ("traefik", "iflearner-gateway"),
                                ("iflearner-workload", "default")):
            assert any(re.fullmatch(rf"10\.213\.0\.1:5000/{name}@sha256:[0-9a-f]{{64}}", image) and ns == namespace
                       for image, ns in pulled), (name, pulled)
        assert not _processes_mentioning(str(data_dir)), "the demo must leave no process behind"
    finally:
        _demo(data_dir, "--down", node="real")
        # The node's images and containers (about 2.3 GB): left behind, a few runs fill the disk
        # and the next real node starts under DiskPressure with nothing schedulable.
        shutil.rmtree(data_dir, ignore_errors=True)


def test_original_topology_demo_cleans_all_three_clusters_after_ctrl_c(tmp_path):
    """`demo --topology original` interrupted once its three clusters run (the worst moment for a
    person to give up: three control planes, two network namespaces): all three are stopped."""
    sys.path.insert(0, str(Path(__file__).parent / "realnode"))
    from realnode_harness import wait_until_host_free

    wait_until_host_free()
    data_dir = Path("/tmp") / f"ifl-orig-{os.getpid()}"  # short: containerd's socket path is limited
    argv = [sys.executable, "-m", "iflearner", "demo", "--data-dir", str(data_dir), "--node", "real",
            "--topology", "original"]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "party-b cluster up:" in line:  # all three clusters run now
                process.send_signal(signal.SIGINT)
                break
        lines += process.stdout.read().splitlines(keepends=True)
        out = "".join(lines)
        assert process.wait(timeout=300) == 130, out[-3000:]
        assert "interrupted; cleaning up" in out and "cleaning the three clusters" in out, out[-3000:]
        for stack in ("party-b", "party-a", "server"):
            assert f"stopping the {stack} cluster" in out, out[-3000:]
        assert not _processes_mentioning(str(data_dir)), "every cluster's processes must be gone"
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert "iflr-node1" not in netns and "iflr-node2" not in netns, netns
        assert "nothing left to clean" in _ok(_demo(data_dir, "--down", node="real"))
    finally:
        if process.poll() is None:
            process.kill()
        _demo(data_dir, "--down", node="real")
        shutil.rmtree(data_dir, ignore_errors=True)
