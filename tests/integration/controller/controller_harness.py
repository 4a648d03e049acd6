"""Helpers for the controller integration tests: a controller process, waits, job manifests.

The controller runs as a separate process (``python -m iflearner.controller``,
the same code as ``iflearner-operator run``), in its own process group, so
tests can SIGTERM it, SIGKILL it with its Pulumi children, and run two.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from iflearner.toolchain import REPO_ROOT

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
EXAMPLES = REPO_ROOT / "examples"
PASSPHRASE = "controller-test-passphrase"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0, interval: float = 0.25,
              on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (ApiException, OSError) as error:
            last_error, value = error, None
        if value:
            return value
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_error}\n{detail}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def example(name: str, namespace: str) -> dict[str, Any]:
    manifest = yaml.safe_load((EXAMPLES / name).read_text())
    manifest["metadata"]["namespace"] = namespace
    return manifest


def job_manifest(name: str, namespace: str, role: str = "server", host: str | None = None,
                 args: list[str] | None = None) -> dict[str, Any]:
    base = example("server.yaml" if role == "server" else "party-a.yaml", namespace)
    job = copy.deepcopy(base)
    job["metadata"] = {"name": name, "namespace": namespace}
    job["spec"]["host"] = host or f"{name}.{'server' if role == 'server' else 'a.party'}.iflearner.com"
    if args is not None:
        job["spec"]["template"]["spec"]["containers"][0]["args"] = args
    return job


class ControllerProcess:
    """One controller process with its metrics/health endpoint on a free port."""

    def __init__(self, kubeconfig: Path, state_dir: Path, log_path: Path, *extra: str,
                 env: dict[str, str] | None = None, code: Path = REPO_ROOT) -> None:
        """``code``: the source tree to run (another commit's, for an upgrade test)."""
        self.port = free_port()
        self.log_path = log_path
        self.code = code
        self.argv = [
            sys.executable, "-m", "iflearner.controller", "--kubeconfig", str(kubeconfig),
            "--state-dir", str(state_dir), "--metrics-address", f"127.0.0.1:{self.port}",
            "--log-level", "debug", *extra,
        ]
        self.env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), self.env.get("PYTHONPATH")) if p)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                        cwd=str(self.code), start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, tail: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        _, text = self.get("/metrics")
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(value for (sample, sample_labels), value in self.metrics().items()
                   if sample == name and set(labels.items()) <= set(sample_labels))

    def pulumi_runs(self) -> float:
        return self.metric("iflearner_pulumi_runs_total")

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"controller exited ({self.process.returncode}):\n{self.log()}")
            try:
                return self.get("/readyz")[0] == 200
            except OSError:
                return False

        wait_for("the controller's /readyz", ready, timeout, on_timeout=self.log)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        """Signal the controller; kill its whole process group if it does not exit in time."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, sig)
                self.process.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        self.kill_group()
        return self.process.returncode

    def kill_group(self) -> None:
        """SIGKILL the controller and everything it started (Pulumi CLIs, providers)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def list_jobs(custom: client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]


def create_job(custom: client.CustomObjectsApi, manifest: dict[str, Any]) -> dict[str, Any]:
    namespace = manifest["metadata"]["namespace"]
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)


def get_job(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((job or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return item
    return {}


def is_ready_running(job: dict[str, Any] | None, generation: int | None = None) -> bool:
    if job is None:
        return False
    status = job.get("status") or {}
    if generation is not None and status.get("observedGeneration") != generation:
        return False
    return status.get("phase") == "Running" and condition(job, "Ready").get("status") == "True"


def wait_ready_running(custom: client.CustomObjectsApi, namespace: str, name: str,
                       controller: ControllerProcess | None = None, timeout: float = 180,
                       generation: int | None = None) -> dict[str, Any]:
    def describe() -> str:
        job = get_job(custom, namespace, name)
        text = yaml.safe_dump((job or {}).get("status"))
        return f"status of {namespace}/{name}:\n{text}\n" + (controller.log() if controller else "")

    return wait_for(f"{namespace}/{name} to be Ready and Running",
                    lambda: (lambda j: j if is_ready_running(j, generation) else None)(
                        get_job(custom, namespace, name)),
                    timeout, interval=0.5, on_timeout=describe)


def gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as error:
        return error.status == 404
    return False
