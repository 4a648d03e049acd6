"""A real federated training round as plain local processes, with TLS.

PyPI's iflearner (the workload's pinned venv), its aggregation server, two
parties running the project's trainer, and a TLS terminator in front of the
server standing in for the gateway; the parties verify the server as
``job1.server.iflearner.com`` against a CA issued by ``iflearner.tlsresources``.
The same functions as ``bench/federation_local.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3
PARTIES = ["party-a", "party-b"]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("federation_local", REPO / "bench" / "federation_local.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fl = _load_bench()


@pytest.fixture(scope="session")
def workload_python() -> Path:
    """The workload's venv from the pinned requirements: built when missing
    (a fresh CI machine reaches PyPI), reused from
    ~/.cache/iflearner-operator/workload-venvs/ otherwise. Never skipped."""
    return fl.workload_python(progress=lambda msg: print(msg))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):
    return fl.write_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def federation(workload_python: Path, certs, tmp_path_factory: pytest.TempPathFactory):
    return fl.run_federation(workload_python, tmp_path_factory.mktemp("federation"), certs,
                             epochs=EPOCHS, parties=PARTIES, timeout=180)


def _logs(fed) -> str:
    return "\n".join(f"--- {name} ---\n{fed.log(name)[-4000:]}" for name in ["server", *PARTIES])


def test_all_processes_exit_zero(federation):
    assert federation.party_rcs == {p: 0 for p in PARTIES}, _logs(federation)
    # The server wrapper ends iflearner's aggregator once every party completed.
    assert federation.server_rc == 0, _logs(federation)
    assert "FL-SERVER complete parties=party-a,party-b" in federation.log("server")


def test_server_log_shows_both_parties_aggregated_every_epoch(federation):
    assert fl.server_log_problems(federation.log("server"), PARTIES, EPOCHS) == [], _logs(federation)


def test_every_party_prints_a_metric_per_epoch_and_a_final_metric(federation):
    for party in PARTIES:
        epochs = federation.epoch_metrics(party)
        assert sorted(epochs) == list(range(1, EPOCHS + 1)), federation.log(party)
        for record in epochs.values():
            assert 0.0 <= float(record["accuracy"]) <= 1.0
            assert float(record["loss"]) > 0.0
        rounds = [r for r in federation.records(party) if r["kind"] == "ROUND"]
        assert [int(r["epoch"]) for r in rounds] == list(range(1, EPOCHS)), federation.log(party)
        final = federation.final(party)
        assert final is not None and final["accuracy"] == epochs[EPOCHS]["accuracy"]
        # Reached through TLS, verified under the server's host name.
        assert f"TLS to {fl.SERVER_HOST} at 127.0.0.1:" in federation.log(party)
    assert set(federation.round_times()) == set(range(1, EPOCHS))


def test_training_improves_the_model(federation):
    # The logistic regression on each party's data learns: loss at the last
    # epoch below the first (averaging with the other party included).
    for party in PARTIES:
        epochs = federation.epoch_metrics(party)
        assert float(epochs[EPOCHS]["loss"]) < float(epochs[1]["loss"]), federation.log(party)


def test_metric_plot(workload_python: Path, federation, tmp_path: Path):
    out = tmp_path / "metrics.png"
    result = fl.write_plot(workload_python, federation, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_api_reports_both_parties_complete(federation):
    # What iflearner-flow reads at http://<job>.<ns>:82/v1/status (port 50002 in the Pod).
    assert federation.status is not None
    assert set(federation.status) == set(PARTIES)
    assert all(entry["complete"] and entry["total_epoch"] == EPOCHS for entry in federation.status.values())


def test_party_with_wrong_trust_file_fails_tls_verification(workload_python: Path, certs, tmp_path: Path):
    rc, log, termination_message = fl.run_untrusting_party(workload_python, tmp_path, certs, timeout=60)
    assert rc == fl.EXIT_TLS, log
    assert "TLS verification failed" in log, log
    assert "certificate verify failed" in log or "unable to get local issuer certificate" in log, log
    # It failed before iflearner's client started (which would retry forever).
    assert "register to server" not in log, log
    # In a Pod, the same message becomes the container's termination message.
    assert termination_message.startswith("TLS verification failed"), termination_message


def test_a_certificate_for_another_host_is_waited_for_not_refused(workload_python: Path, certs, tmp_path: Path):
    """A gateway answers a host it has no route for (yet) with another certificate (its default):
    the party keeps waiting for the host's route, up to --connect-timeout, even with --tls-grace=0,
    and then says what it saw. (Before, it failed at once as if its trust file were wrong.)"""
    rc, log, termination_message = fl.run_untrusting_party(
        workload_python, tmp_path, certs, trust=certs.ca, server_name="job1.b.party.iflearner.com",
        extra_args=("--tls-grace=0", "--connect-timeout=4"))
    assert rc == fl.EXIT_UNREACHABLE, log
    assert "TLS verification failed" not in log, log
    assert "presents a certificate not issued for job1.b.party.iflearner.com" in termination_message, log
    assert "is the server job's route there yet?" in termination_message, termination_message


GUARD_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
import trainer  # installs the guard on import
from iflearner.business.homo.strategy.fedavg_client import FedavgClient
from iflearner.communication.homo import homo_pb2

strategy = FedavgClient()
Stage = strategy.Stage
result = homo_pb2.AggregateResult(parameters={"w": homo_pb2.Parameter(values=[1.0, 2.0], shape=[2])})
strategy.set_current_stage(Stage.Training)
strategy.handler_aggregate_result(result)      # heartbeat thread, during the upload call
strategy.set_current_stage(Stage.Waiting)      # main loop, after the upload call returned
assert strategy.current_stage() == Stage.Setting, strategy.current_stage()
assert list(strategy.aggregate_result()["w"]) == [1.0, 2.0]
strategy.set_current_stage(Stage.Waiting)      # main loop, after applying the aggregate
assert strategy.current_stage() == Stage.Waiting
print("guarded")
"""


def test_trainer_guards_iflearners_lost_aggregate_race(workload_python: Path, tmp_path: Path):
    # iflearner 0.1.0 loses an aggregate that arrives before its own upload
    # call returns (the federation then hangs); the trainer's guard keeps it.
    import subprocess

    # -I and a neutral cwd: the repo's own package is also named ``iflearner``.
    result = subprocess.run([str(workload_python), "-I", "-c", GUARD_CHECK, str(fl.WORKLOAD)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env={"MPLBACKEND": "Agg"})
    assert result.returncode == 0 and "guarded" in result.stdout, result.stdout + result.stderr


@pytest.fixture(scope="module")
def masked_federation(workload_python: Path, certs, tmp_path_factory: pytest.TempPathFactory):
    """The same federation (same seeds) with iflearner's secure aggregation: ``--peers``."""
    return fl.run_federation(workload_python, tmp_path_factory.mktemp("masked"), certs,
                             epochs=EPOCHS, parties=PARTIES, timeout=180, secure_aggregation=True)


def test_secure_aggregation_masks_every_upload_and_the_masks_cancel(federation, masked_federation):
    """Each party exchanged a key and a mask with the other, added a non-zero mask to its upload, the
    masks sum to zero, and the server's aggregate (each party's global metric per round) equals the
    unmasked run's: float32 parameters plus masks below 1 lose at most ~1e-7, far under 1e-5."""
    assert masked_federation.party_rcs == {p: 0 for p in PARTIES}, _logs(masked_federation)
    masks = {}
    for party in PARTIES:
        other = next(p for p in PARTIES if p != party)
        records = masked_federation.records(party)
        steps = [(r["step"], r.get("served")) for r in records if r["kind"] == "PEER"]
        assert ("key", None) in steps and ("mask", None) in steps, masked_federation.log(party)
        assert ("key-served", other) in steps and ("mask-served", other) in steps, masked_federation.log(party)
        (mask,) = [float(r["mask"]) for r in records if r["kind"] == "MASK"]
        masks[party] = mask
    assert all(abs(m) > 0 for m in masks.values()), masks
    assert abs(sum(masks.values())) < 1e-9, masks
    for party in PARTIES:
        plain = {int(r["epoch"]): r for r in federation.records(party) if r["kind"] == "ROUND"}
        masked = {int(r["epoch"]): r for r in masked_federation.records(party) if r["kind"] == "ROUND"}
        assert sorted(masked) == sorted(plain) == list(range(1, EPOCHS))
        for epoch, record in plain.items():
            assert abs(float(masked[epoch]["global_loss"]) - float(record["global_loss"])) < 1e-5, (party, epoch)
            assert masked[epoch]["global_accuracy"] == record["global_accuracy"], (party, epoch)
