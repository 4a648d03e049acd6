"""A real federated training round as plain local processes, with TLS (issue 12's baseline).

    .venv/bin/python bench/federation_local.py [--epochs 5] [--parties 2] [--keep]

What runs, all on 127.0.0.1, no cluster:

* the workload's own virtualenv (PyPI's iflearner and the pins of
  ``workloads/iflearner/requirements.txt``), built once and cached under
  ``~/.cache/iflearner-operator/workload-venvs/<hash of the requirements>``;
* a CA and a server certificate for ``job1.server.iflearner.com`` issued with
  the operator's own ``iflearner.tlsresources`` (as the job stack does);
* the aggregator, ``workloads/iflearner/server.py -n=<parties> --epochs=N``
  (iflearner's ``aggregate_server``), plaintext gRPC as in a Pod;
* a TLS terminator standing in for the gateway (TLS ends there in a cluster
  too): the server certificate, ALPN h2, bytes relayed to the aggregator;
* the parties, ``workloads/iflearner/trainer.py --name=... --epochs=N
  --server=127.0.0.1:<tls port> --cert=<ca.crt>`` plus
  ``--server-name=job1.server.iflearner.com``: the host name is verified
  (gRPC's ssl_target_name_override) without touching /etc/hosts or DNS.

It prints each epoch's round time (the wall time from one epoch's start to
the next's, mean over the parties) and the final metrics; exit status 1 when
the federation did not complete. ``tests/integration/test_federation_local.py``
runs the same functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iflearner.tlsresources import issue_ca, issue_leaf  # noqa: E402

WORKLOAD = REPO / "workloads" / "iflearner"
REQUIREMENTS = WORKLOAD / "requirements.txt"
SERVER = WORKLOAD / "server.py"
TRAINER = WORKLOAD / "trainer.py"
PLOT = WORKLOAD / "plot.py"
SERVER_HOST = "job1.server.iflearner.com"
EXIT_TLS = 3  # trainer.EXIT_TLS (the trainer runs in the workload venv, not importable here)
EXIT_UNREACHABLE = 4  # trainer.EXIT_UNREACHABLE


# --- the workload's virtualenv -------------------------------------------------------------------

def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "iflearner-operator" / "workload-venvs"


def workload_python(progress: Callable[[str], None] = print, requirements: Path = REQUIREMENTS) -> Path:
    """The workload venv's interpreter, built from the pinned requirements
    when missing (PyPI must be reachable then), reused when present.

    Keyed by the requirements file's hash: a changed pin gets a new venv. A
    lock makes concurrent callers (pytest-xdist, a bench beside a test) build
    it once; a ``.complete`` marker makes an interrupted build start over.
    """
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"iflearner-{digest}"
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if marker.is_file():
        return python
    with open(root / f"iflearner-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        progress(f"workload venv: creating {venv} from {requirements.relative_to(REPO)} (one time)")
        started = time.monotonic()
        # The base interpreter, not this venv's: the workload venv must not see the repo's packages
        # (the repo's own package is also named ``iflearner``).
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", str(venv)])
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--no-deps", "--only-binary=:all:", "-r", str(requirements)])
        marker.write_text(f"{requirements.read_text()}")
        progress(f"workload venv: ready in {time.monotonic() - started:.0f}s")
    return python


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}); is PyPI reachable?\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")


# --- certificates --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Certificates:
    ca: Path          # the trust file parties get with --cert
    server_cert: Path
    server_key: Path
    wrong_ca: Path    # a CA that did not sign the server certificate


def write_certificates(directory: Path, host: str = SERVER_HOST) -> Certificates:
    """The server's certificate for ``host``, signed by a fresh CA, as the
    job stack issues it (``iflearner.tlsresources``); plus an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = issue_ca("iflearner local federation CA", 24)
    leaf = issue_leaf(ca["cert_pem"], ca["private_key_pem"], host, [host], 24)
    wrong = issue_ca("some other CA", 24)
    certs = Certificates(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                         directory / "wrong-ca.crt")
    certs.ca.write_text(ca["cert_pem"])
    certs.server_cert.write_text(leaf["cert_pem"])
    certs.server_key.write_text(leaf["private_key_pem"])
    certs.server_key.chmod(0o600)
    certs.wrong_ca.write_text(wrong["cert_pem"])
    return certs


# --- the gateway stand-in: TLS terminated, bytes relayed to plaintext gRPC ----------------------

class TlsTerminator:
    """Accepts TLS (ALPN h2) on 127.0.0.1 and relays the decrypted bytes to
    ``upstream`` as plaintext HTTP/2, as a gateway does for a gRPC route."""

    def __init__(self, cert: Path, key: Path, upstream: tuple[str, int]) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._context.set_alpn_protocols(["h2"])
        self._upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> int:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self.port

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self._context)
        return self._server.sockets[0].getsockname()[1]

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.close()
            return

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()

        await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Open relays (the parties' long-lived HTTP/2 connections) end here too.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


# --- processes -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}) before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def start(python: Path, script: Path, args: list[str], workdir: Path, name: str,
          extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """One process, in its own working directory (iflearner writes log/ and
    metric/ there), stdout and stderr in one log like a container's."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed by the child's exit
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"  # matplotlib is imported by iflearner; never look for a display
    env.update(extra_env or {})
    return subprocess.Popen([str(python), "-u", str(script), *args], cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def log_of(workdir: Path, name: str) -> str:
    path = workdir / name / f"{name}.log"
    return path.read_text(errors="replace") if path.is_file() else ""


# --- parsing what the workload prints -------------------------------------------------------------

_RPC = re.compile(r"OUT: message type: (?P<type>\w+), time: (?P<ms>[\d.]+)ms")
_LINE = re.compile(r"^FL-(?P<kind>[A-Z]+)((?: \S+=\S*)*)\s*$")


def parse_lines(text: str) -> list[dict[str, str]]:
    """The trainer's and server's ``FL-<KIND> key=value ...`` lines, as dicts with ``kind``."""
    records = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            record = {"kind": match["kind"]}
            record.update(pair.split("=", 1) for pair in line.split()[1:])
            records.append(record)
    return records


def server_log_problems(log: str, parties: list[str], epochs: int) -> list[str]:
    """What is missing from the aggregator's log for a complete federation.

    iflearner's party uploads epochs 1..N-1 and ends after training and
    evaluating epoch N without uploading it (``train_client.Controller.run``
    exits before the upload of the last epoch), so the server aggregates N-1
    rounds: each shows ``Client: <party>, epoch: <e>`` for every party, then
    ``Avg params``. Then each party's ``Client complete``.
    """
    problems = []
    position = 0
    for epoch in range(1, epochs):
        for party in parties:
            if f"Client: {party}, epoch: {epoch}" not in log:
                problems.append(f"no update of {party} for epoch {epoch}")
        found = [log.find(f"Client: {p}, epoch: {epoch}", position) for p in parties]
        last_update = max(found) if min(found) >= 0 else -1
        averaged = log.find("Avg params", last_update) if last_update >= 0 else -1
        if averaged < 0:
            problems.append(f"epoch {epoch}: no aggregation (Avg params) after both parties' updates")
        else:
            position = averaged + 1
    problems += [f"{p} never reported completion" for p in parties if f"Client complete: {p}" not in log]
    return problems


# --- one federation ------------------------------------------------------------------------------

@dataclass
class Federation:
    workdir: Path
    epochs: int
    parties: list[str]
    server_rc: int | None = None
    party_rcs: dict[str, int | None] = field(default_factory=dict)
    status: dict[str, object] | None = None
    wall_s: float = 0.0

    def log(self, name: str) -> str:
        return log_of(self.workdir, name)

    def records(self, name: str) -> list[dict[str, str]]:
        return parse_lines(self.log(name))

    def epoch_metrics(self, party: str) -> dict[int, dict[str, str]]:
        return {int(r["epoch"]): r for r in self.records(party) if r["kind"] == "EPOCH"}

    def round_times(self) -> dict[int, float]:
        """Epoch -> the wall time of its whole round (start of epoch e to start
        of e+1, mean over the parties), for epochs 1..N-1."""
        times: dict[int, list[float]] = {}
        for party in self.parties:
            for epoch, record in self.epoch_metrics(party).items():
                if "cycle_s" in record:
                    times.setdefault(epoch - 1, []).append(float(record["cycle_s"]))
        return {epoch: statistics.mean(values) for epoch, values in sorted(times.items())}

    def rpc_ms(self) -> dict[str, float]:
        """Message type -> mean client-side latency of iflearner's gRPC calls
        (its ``OUT: message type: <type>, time: <ms>ms`` log lines), over
        the parties: the transport's own cost, which the round time hides
        under iflearner's one-second polling."""
        samples: dict[str, list[float]] = {}
        for party in self.parties:
            for match in _RPC.finditer(self.log(party)):
                samples.setdefault(match["type"], []).append(float(match["ms"]))
        return {kind: statistics.mean(values) for kind, values in sorted(samples.items())}

    def final(self, party: str) -> dict[str, str] | None:
        done = [r for r in self.records(party) if r["kind"] == "DONE"]
        return done[-1] if done else None


def run_federation(python: Path, workdir: Path, certs: Certificates, epochs: int = 3,
                   parties: list[str] | None = None, timeout: float = 180.0,
                   progress: Callable[[str], None] = print, secure_aggregation: bool = False) -> Federation:
    """Server, TLS terminator and parties; returns when every process ended
    (the server exits on its own once all parties completed).

    ``secure_aggregation``: the parties also run iflearner's ``--peers``
    exchange (each its peer server on a port of its own, plaintext here:
    the real node's test does it through the gateways with TLS), so every
    upload carries a mask and only the server's sum is clear."""
    parties = parties or ["party-a", "party-b"]
    peer_ports = {party: free_port() for party in parties}
    result = Federation(workdir, epochs, parties)
    grpc_port, http_port = free_port(), free_port()
    server = start(python, SERVER, [f"-n={len(parties)}", f"--epochs={epochs}", f"--addr=127.0.0.1:{grpc_port}",
                                    f"--http_addr=127.0.0.1:{http_port}", "--linger=3"],
                   workdir / "server", "server")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    terminator = TlsTerminator(certs.server_cert, certs.server_key, ("127.0.0.1", grpc_port))
    try:
        wait_for_port(grpc_port, 60, server)
        tls_port = terminator.start()
        progress(f"server: gRPC 127.0.0.1:{grpc_port}, status API :{http_port}, TLS (as {SERVER_HOST}) :{tls_port}")
        started = time.monotonic()
        for party in parties:
            processes[party] = start(python, TRAINER, [
                f"--name={party}", f"--epochs={epochs}", f"--server=127.0.0.1:{tls_port}",
                f"--cert={certs.ca}", f"--server-name={SERVER_HOST}", "--connect-timeout=60",
                *([_peers_flag(party, peer_ports)] if secure_aggregation else []),
            ], workdir / party, party)
        deadline = started + timeout
        for party, process in processes.items():
            result.party_rcs[party] = _wait(process, deadline)
        result.wall_s = time.monotonic() - started
        # The server lingers a few seconds after the last party: read the status API as a scheduler would.
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/status", timeout=5) as response:
                result.status = json.loads(response.read())
        result.server_rc = _wait(server, time.monotonic() + 30)
    finally:
        for process in [server, *processes.values()]:
            if process.poll() is None:
                process.kill()
                process.wait()
        terminator.stop()
    return result


def _peers_flag(party: str, peer_ports: dict[str, int]) -> str:
    """iflearner's ``--peers``: this party's own listen address first, then every other party's."""
    others = [f"127.0.0.1:{port}" for name, port in peer_ports.items() if name != party]
    return "--peers=" + ";".join([f"127.0.0.1:{peer_ports[party]}", *others])


def _wait(process: subprocess.Popen[bytes], deadline: float) -> int | None:
    try:
        return process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def run_untrusting_party(python: Path, workdir: Path, certs: Certificates, name: str = "party-wrong",
                         timeout: float = 60.0, trust: Path | None = None, server_name: str = SERVER_HOST,
                         extra_args: tuple[str, ...] = ("--tls-grace=0", "--connect-timeout=10"),
                         ) -> tuple[int | None, str, str]:
    """A party whose --cert holds a CA that did not sign the server's
    certificate (``trust``, by default ``certs.wrong_ca``), against the same
    TLS terminator, verifying it as ``server_name``: (exit status, its log,
    what it wrote as its Kubernetes termination message)."""
    termination_log = workdir / name / "termination-log"
    termination_log.parent.mkdir(parents=True, exist_ok=True)
    termination_log.write_text("")  # kubelet provides the file; the trainer never creates it
    terminator = TlsTerminator(certs.server_cert, certs.server_key, ("127.0.0.1", free_port()))
    port = terminator.start()
    try:
        process = start(python, TRAINER, [
            f"--name={name}", "--epochs=2", f"--server=127.0.0.1:{port}", f"--cert={trust or certs.wrong_ca}",
            f"--server-name={server_name}", *extra_args,
        ], workdir / name, name, {"TERMINATION_LOG": str(termination_log)})
        rc = _wait(process, time.monotonic() + timeout)
        if rc is None:
            process.kill()
            process.wait()
    finally:
        terminator.stop()
    return rc, log_of(workdir, name), termination_log.read_text()


def write_plot(python: Path, fed: Federation, out: Path) -> subprocess.CompletedProcess[str]:
    """The parties' metric per epoch as a PNG (``workloads/iflearner/plot.py``,
    run with the workload's matplotlib)."""
    logs = [str(fed.workdir / party / f"{party}.log") for party in fed.parties]
    return subprocess.run([str(python), "-I", str(PLOT), "--out", str(out), *logs], cwd=fed.workdir,
                          capture_output=True, text=True, check=False, env={"MPLBACKEND": "Agg"})


# --- the benchmark -------------------------------------------------------------------------------

@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="federation-local-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    parser.add_argument("--plot", type=Path, help="write the metric per epoch as a PNG here")
    parser.add_argument("--secure-aggregation", action="store_true",
                        help="the parties exchange masks (iflearner's --peers) before training")
    args = parser.parse_args()
    python = workload_python()
    names = [f"party-{chr(ord('a') + i)}" for i in range(args.parties)]
    with _workdir(args.keep) as workdir:
        certs = write_certificates(workdir / "tls")
        fed = run_federation(python, workdir, certs, epochs=args.epochs, parties=names,
                             secure_aggregation=args.secure_aggregation)
        problems = server_log_problems(fed.log("server"), names, args.epochs)
        rounds = fed.round_times()
        print(f"\nfederation: {len(names)} parties, {args.epochs} epochs, TLS as {SERVER_HOST}, local processes")
        for epoch, seconds in rounds.items():
            print(f"  epoch {epoch}: round {seconds:.3f} s")
        if rounds:
            print(f"  round time, mean over epochs 1..{args.epochs - 1}: {statistics.mean(rounds.values()):.3f} s")
        print(f"  parties start -> last party done: {fed.wall_s:.2f} s")
        rpcs = ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in fed.rpc_ms().items())
        print(f"  gRPC call latency (mean, party side): {rpcs}")
        for party in names:
            final = fed.final(party)
            shown = f"loss {final['loss']}, accuracy {final['accuracy']}" if final else "no final metric"
            print(f"  {party}: exit {fed.party_rcs.get(party)}, final {shown}")
        print(f"  server: exit {fed.server_rc}; /v1/status: {json.dumps(fed.status)}")
        for problem in problems:
            print(f"  PROBLEM: {problem}")
        if args.plot:
            plotted = write_plot(python, fed, args.plot.resolve())
            print(f"  {(plotted.stdout + plotted.stderr).strip()}")
        ok = not problems and fed.server_rc == 0 and all(rc == 0 for rc in fed.party_rcs.values())
        if not ok:
            print("federation did not complete; run with --keep and read the logs", file=sys.stderr)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
