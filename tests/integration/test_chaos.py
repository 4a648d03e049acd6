"""Faults together, seeded (``bench/chaos.py``, small): jobs created, changed and deleted while the
operator's process group, its Pulumi processes, kube-apiserver and etcd are killed at the seed's
moments; then every invariant. Its own local control plane: the faults must not touch the
session's cluster. The seed and its faults are printed; ``bench/chaos.py --seed N`` replays one."""

from __future__ import annotations

import importlib.util
import sys

from iflearner.toolchain import REPO_ROOT

SEED, JOBS, FAULTS = 11, 15, 8


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos", REPO_ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_no_job_or_pod_is_lost_under_faults_together():
    chaos = _chaos()
    steps = chaos.schedule(SEED, JOBS, FAULTS, 1.0)
    assert steps == chaos.schedule(SEED, JOBS, FAULTS, 1.0), "a seed replays the same run"
    assert {s.action for s in steps} >= {"create", "change", "delete", "operator", "pulumi", "apiserver", "etcd"}
    report = chaos.run_chaos(SEED, JOBS, FAULTS, bound=300.0)
    print("\n".join(report.lines()))
    assert report.faults.get("operator") and report.faults.get("apiserver") and report.faults.get("etcd"), report
    assert report.jobs_expected == JOBS - JOBS // 3 and not report.unconverged, report.lines()
    assert report.jobs_converged == report.jobs_expected, report.lines()
    assert report.leftovers == [], report.lines()
    assert report.leaked_locks == [], report.lines()
    assert report.stacks == report.jobs_expected, report.lines()
    assert report.pods_recreated == [], report.lines()
