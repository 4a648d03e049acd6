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
