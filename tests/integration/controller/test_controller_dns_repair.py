"""A job's DNS record removed or changed behind its back comes back, and so does a records shard
deleted whole (the jobs' patches make it again): the controller watches the records ConfigMaps
(by name). The resync period
is the default 600 s: only that watch brings the job back. The repair is one `up` (with a refresh)
that touches nothing else: the job's Pod is the same Pod."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from controller_harness import ControllerProcess, create_job, get_job, job_manifest, wait_for, wait_ready_running
from kubernetes import client

from iflearner.desired import ClusterSettings, zone_file, zone_file_key

SETTINGS = ClusterSettings()
INGRESS = "10.96.200.1"


@pytest.fixture(scope="module")
def dns_controller(kubeconfig: Path, controller_prereqs: dict[str, str], state_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    root = tmp_path_factory.mktemp("dns-repair")
    settings = root / "cluster-settings.yaml"
    settings.write_text(yaml.safe_dump({"ingressAddress": INGRESS}))
    process = ControllerProcess(kubeconfig, state_dir, root / "controller.log", "--cluster-settings", str(settings),
                                "--workers", "2").start()
    process.wait_ready()
    yield process
    process.stop()


def _records(core: client.CoreV1Api) -> dict[str, str]:
    return core.read_namespaced_config_map(SETTINGS.dns_configmap_name, SETTINGS.dns_namespace).data or {}


def _repaired(what: str, core: client.CoreV1Api, key: str, text: str, controller: ControllerProcess) -> float:
    started = time.monotonic()
    wait_for(what, lambda: _records(core).get(key) == text, 120, interval=0.2, on_timeout=controller.log)
    return time.monotonic() - started


def test_a_jobs_dns_record_removed_changed_or_lost_with_its_shard_comes_back(dns_controller, custom, core,
                                                                             jobs_ns):
    job = job_manifest("dns", jobs_ns)
    host = job["spec"]["host"]
    key, text = zone_file_key(host), zone_file(host, INGRESS)
    create_job(custom, job)
    wait_ready_running(custom, jobs_ns, "dns", dns_controller)
    assert _records(core)[key] == text
    pod_uid = core.read_namespaced_pod("dns", jobs_ns).metadata.uid
    runs = dns_controller.pulumi_runs()
    name, namespace = SETTINGS.dns_configmap_name, SETTINGS.dns_namespace
    figures = {}

    # 1. the key deleted by hand (a JSON patch, as `kubectl patch --type=json` sends)
    core.patch_namespaced_config_map(name, namespace, [{"op": "remove", "path": f"/data/{key}"}])
    figures["key deleted"] = _repaired("the deleted record to come back", core, key, text, dns_controller)

    # 2. the key's zone changed by hand: another address
    core.patch_namespaced_config_map(name, namespace, {"data": {key: zone_file(host, "192.0.2.66")}})
    figures["key changed"] = _repaired("the changed record to be restored", core, key, text, dns_controller)

    # 3. the shard deleted
    core.delete_namespaced_config_map(name, namespace)
    figures["shard deleted"] = _repaired("the record in a shard of its own making", core, key, text,
                                         dns_controller)

    print("record repair: " + ", ".join(f"{k} {v:.1f} s" for k, v in figures.items()))
    wait_ready_running(custom, jobs_ns, "dns", dns_controller)
    # One up per repair (the record is back a little before its run ends), nothing else replaced.
    wait_for("the three repairs' runs to end", lambda: dns_controller.pulumi_runs() >= runs + 3, 60)
    assert dns_controller.pulumi_runs() == runs + 3, dns_controller.log()
    assert core.read_namespaced_pod("dns", jobs_ns).metadata.uid == pod_uid
    assert get_job(custom, jobs_ns, "dns")["metadata"]["generation"] == 1
