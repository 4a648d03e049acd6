"""A federation party: iflearner's own client driving a small numpy model.

    python -u trainer.py --name=client1 --epochs=3 \\
        --server=job1.server.iflearner.com:30031 --cert=/etc/server-iflearner-secret.crt

The flags are iflearner's own (``iflearner.business.homo.argument``: --name,
--epochs, --server, --cert, --enable-ll, --peers, --peer-cert), so party jobs
keep the original README's shape. This file adds:

* ``LogisticTrainer``: iflearner's ``Trainer`` interface (get/set/config/fit/
  evaluate) over logistic regression in numpy, on data generated at start
  from a fixed seed per party name (nothing is downloaded at run time);
* a TLS pre-flight check before iflearner's client starts: iflearner retries
  registration forever on any error, so a party with a wrong trust file would
  hang instead of failing. The check fails fast, with a message that says
  what is wrong, and exits non-zero (:data:`EXIT_TLS`);
* ``--server-name``: the TLS name to verify instead of the host in --server
  (gRPC's ``grpc.ssl_target_name_override``), for local runs where the
  server's host name does not resolve; unused in a cluster;
* one line per event on stdout, ``FL-<KIND>`` then ``key=value`` fields
  (floats with 6 decimals, no spaces), easy to grep and parse::

    FL-START party=<name> epochs=<N> server=<host:port> samples=<n>
    FL-EPOCH party=<name> epoch=<e> loss=<f> accuracy=<f> train_s=<f> [cycle_s=<f>]
    FL-ROUND party=<name> epoch=<e> round_s=<f> global_loss=<f> global_accuracy=<f>
    FL-DONE  party=<name> epochs=<N> loss=<f> accuracy=<f>

  ``FL-EPOCH`` for every epoch 1..N: the metric of this party's model on its
  held-out data after the epoch's training; ``cycle_s`` (from epoch 2) is
  the whole previous round, start of epoch e-1 to start of e. ``FL-ROUND``
  for epochs 1..N-1, when the server's aggregate arrives: ``round_s`` from
  the epoch's start, and the aggregated (global) model's metric here.
  ``FL-DONE``: the final metric. (iflearner's party uploads epochs 1..N-1
  and ends after evaluating epoch N, so the server aggregates N-1 rounds.)

Exit status: 0 after the last epoch (iflearner's own ``os._exit(0)``);
:data:`EXIT_TLS` (3) when the server's certificate is not trusted;
:data:`EXIT_UNREACHABLE` (4) when the server cannot be reached in time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import os
import random
import socket
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

# Exit status when the server's certificate is not trusted by --cert (or its
# name does not match): distinct from 1 (any other error) so a caller can tell.
EXIT_TLS = 3
# Exit status when the server cannot be reached within --connect-timeout.
EXIT_UNREACHABLE = 4

# The learning task every party shares: one true weight vector, drawn from a
# fixed seed, so averaging the parties' models is meaningful.
TASK_SEED = 20220601
FEATURES = 16


def metric_line(kind: str, **fields: object) -> str:
    """``FL-<KIND> key=value ...``: floats with 6 decimals, no spaces in values."""
    parts = [f"FL-{kind}"]
    for key, value in fields.items():
        text = f"{value:.6f}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text.replace(' ', '_')}")
    return " ".join(parts)


def emit(kind: str, **fields: object) -> None:
    # flush: a Pod's log (and a test reading a pipe) must see each line at once.
    print(metric_line(kind, **fields), flush=True)


def party_seed(name: str) -> int:
    """A stable seed per party name (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def make_data(name: str, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test sets of one party: the shared task, with a per-party
    shift of the feature distribution (non-IID, as real parties are)."""
    true_w = np.random.default_rng(TASK_SEED).normal(size=FEATURES)
    rng = np.random.default_rng(party_seed(name))
    shift = rng.normal(scale=0.5, size=FEATURES)
    x = rng.normal(size=(2 * samples, FEATURES)) + shift
    logits = x @ true_w / np.sqrt(FEATURES)
    y = (rng.random(2 * samples) < 1.0 / (1.0 + np.exp(-4.0 * logits))).astype(np.float64)
    return x[:samples], y[:samples], x[samples:], y[samples:]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


def _load_iflearner() -> tuple[ModuleType, ModuleType, ModuleType]:
    """iflearner's client modules, imported under a Python 3.11 shim.

    ``iflearner.communication.peer.diffie_hellman_inst`` (imported by
    ``train_client``) calls ``random.seed(datetime.now())`` at import time;
    Python 3.11 accepts only None/int/float/str/bytes seeds. The shim turns
    that one call into ``random.seed(None)`` (OS entropy, stronger than the
    clock) and is removed right after the import.
    """
    original = random.seed

    def seed(a: Any = None, version: int = 2) -> None:  # noqa: ANN401 - random.seed's own signature
        original(None if isinstance(a, datetime.datetime) else a, version)

    random.seed = seed  # type: ignore[assignment]
    try:
        from iflearner.business.homo import argument, train_client, trainer
    finally:
        random.seed = original  # type: ignore[assignment]
    return argument, train_client, trainer


def _guard_lost_aggregate(strategy_client: ModuleType) -> None:
    """Fix a race in iflearner 0.1.0's client that deadlocks the federation.

    ``train_client.Controller.run`` uploads its parameters, then sets the
    stage to Waiting. When this party is the last to upload, the server
    aggregates during that call, and the heartbeat thread may receive the
    aggregate and set the stage to Setting *before* the upload call returns;
    the main loop's Waiting then overwrites Setting, the aggregate is never
    applied, the party never reports ready, and every party waits forever.
    Seen in 2 of 5 local runs of 10 epochs. The guard: from the moment an
    aggregate arrives until the main loop takes it (``aggregate_result()``),
    a change to Waiting is ignored. Class-level, in this process only.
    """
    cls = strategy_client.StrategyClient
    waiting = cls.Stage.Waiting
    handle, take, set_stage = cls.handler_aggregate_result, cls.aggregate_result, cls.set_current_stage

    def handler_aggregate_result(self: Any, data: Any) -> None:  # noqa: ANN401
        self._fl_untaken = True  # before the handler sets Setting
        handle(self, data)

    def aggregate_result(self: Any) -> Any:  # noqa: ANN401
        self._fl_untaken = False
        return take(self)

    def set_current_stage(self: Any, stage: Any) -> None:  # noqa: ANN401
        if stage == waiting and getattr(self, "_fl_untaken", False):
            return
        set_stage(self, stage)

    cls.handler_aggregate_result = handler_aggregate_result
    cls.aggregate_result = aggregate_result
    cls.set_current_stage = set_current_stage


argument, train_client, iflearner_trainer = _load_iflearner()
Trainer = iflearner_trainer.Trainer
_guard_lost_aggregate(sys.modules["iflearner.business.homo.strategy.strategy_client"])


class LogisticTrainer(Trainer):
    """Logistic regression trained with mini-batch SGD, one pass per epoch."""

    def __init__(self, name: str, epochs: int, samples: int, learning_rate: float, batch_size: int) -> None:
        self._name = name
        self._epochs = epochs
        self._x, self._y, self._x_test, self._y_test = make_data(name, samples)
        self._w = np.zeros(FEATURES)
        self._b = np.zeros(1)
        self._lr = learning_rate
        self._batch = batch_size
        self._rng = np.random.default_rng(party_seed(name) + 1)
        self._fit_started: dict[int, float] = {}
        self._last_epoch = 0

    def config(self) -> dict[str, float | int]:
        # iflearner sends sample_num and batch_num in its registration (protobuf
        # integers: they must be ints) and uses them in weighted FedAvg/Scaffold.
        return {
            "learning_rate": self._lr,
            "batch_num": -(-len(self._y) // self._batch),
            "sample_num": len(self._y),
        }

    def get(self, param_type: Any = None) -> dict[str, np.ndarray]:  # noqa: ANN401 - iflearner's enum
        return {"weight": self._w.astype(np.float32), "bias": self._b.astype(np.float32)}

    def set(self, parameters: Mapping[str, np.ndarray], param_type: Any = None) -> None:  # noqa: ANN401
        # Called by iflearner with the server's aggregate: the end of a round.
        self._w = np.asarray(parameters["weight"], dtype=np.float64).reshape(FEATURES)
        self._b = np.asarray(parameters["bias"], dtype=np.float64).reshape(1)
        epoch = self._last_epoch
        loss, accuracy = self._metrics()
        started = self._fit_started.get(epoch)
        round_s = time.monotonic() - started if started is not None else float("nan")
        emit("ROUND", party=self._name, epoch=epoch, round_s=round_s,
             global_loss=loss, global_accuracy=accuracy)

    def fit(self, epoch: int) -> None:
        self._fit_started[epoch] = time.monotonic()
        self._last_epoch = epoch
        order = self._rng.permutation(len(self._y))
        for start in range(0, len(order), self._batch):
            idx = order[start:start + self._batch]
            x, y = self._x[idx], self._y[idx]
            error = _sigmoid(x @ self._w + self._b[0]) - y
            self._w -= self._lr * (x.T @ error) / len(idx)
            self._b -= self._lr * np.array([error.mean()])

    def evaluate(self, epoch: int) -> dict[str, float]:
        loss, accuracy = self._metrics()
        started = self._fit_started.get(epoch, time.monotonic())
        fields: dict[str, object] = {"loss": loss, "accuracy": accuracy, "train_s": time.monotonic() - started}
        previous = self._fit_started.get(epoch - 1)
        if previous is not None:
            # The whole round of the previous epoch, start to start: train,
            # upload, wait for every party, aggregate, download, get ready.
            fields["cycle_s"] = started - previous
        emit("EPOCH", party=self._name, epoch=epoch, **fields)
        if epoch == self._epochs:
            # iflearner exits the process right after the last evaluation.
            emit("DONE", party=self._name, epochs=epoch, loss=loss, accuracy=accuracy)
        return {"loss": loss, "accuracy": accuracy}

    def _metrics(self) -> tuple[float, float]:
        p = _sigmoid(self._x_test @ self._w + self._b[0])
        eps = 1e-12
        loss = float(-np.mean(self._y_test * np.log(p + eps) + (1 - self._y_test) * np.log(1 - p + eps)))
        accuracy = float(np.mean((p >= 0.5) == (self._y_test == 1.0)))
        return loss, accuracy


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--server must be <host>:<port>, got {address!r}")
    return host.strip("[]"), int(port)


def fail(status: int, message: str) -> NoReturn:
    """Print why the party gives up and exit with ``status``.

    In a Kubernetes container the message also goes to the termination
    message file (kubelet mounts it; never created here), so the Pod's
    ``state.terminated.message`` - and the job's condition - say why.
    """
    print(message, file=sys.stderr, flush=True)
    termination_log = Path(os.environ.get("TERMINATION_LOG", "/dev/termination-log"))
    if termination_log.is_file():
        with contextlib.suppress(OSError):
            termination_log.write_text(message[:4096])  # kubelet's limit
    raise SystemExit(status)


# Verification errors that mean "this is not the host's certificate (yet)", not
# "the host's certificate is untrusted": a gateway answers a name it has no route
# for with its default, self-signed certificate, or with another host's.
_NOT_THIS_HOSTS_CERTIFICATE = {
    18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: e.g. Traefik's default certificate
    62,  # X509_V_ERR_HOSTNAME_MISMATCH
}


def check_tls(address: str, server_name: str, cafile: str, connect_timeout: float, tls_grace: float,
              *, peer: str = "server", flag: str = "--cert",
              mounted: str = "/etc/server-iflearner-secret.crt") -> None:
    """Handshake with ``peer`` (the server, or another party's peer server) as
    gRPC will, verifying against ``cafile``.

    Connection errors (DNS not there yet, refused, reset) and a certificate
    that is not issued for ``server_name`` (a gateway's default certificate
    until the host's route is programmed: the other job may start later) are
    retried until ``connect_timeout``. A certificate for the name that
    ``cafile`` does not accept is retried for ``tls_grace`` only, then the
    party exits with :data:`EXIT_TLS`, saying which flag to fix.
    """
    host, port = split_host_port(address)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        fail(EXIT_TLS, f"TLS trust file {cafile} cannot be loaded as PEM certificates: {error}")
    context.set_alpn_protocols(["h2"])  # what gRPC offers; a gateway must select it
    started = time.monotonic()
    first_refusal: float | None = None
    last_problem = ""
    while True:
        try:
            with socket.create_connection((host, port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname=server_name) as tls:
                if tls.selected_alpn_protocol() != "h2":
                    fail(EXIT_TLS, f"TLS to {server_name} at {host}:{port} works, but the {peer} did not select "
                         f"HTTP/2 (ALPN {tls.selected_alpn_protocol()!r}); gRPC needs h2: check that the "
                         "gateway's route for this host is a gRPC route")
                print(f"TLS to {server_name} at {host}:{port} verified with {cafile}", flush=True)
                return
        except ssl.SSLCertVerificationError as error:
            if error.verify_code in _NOT_THIS_HOSTS_CERTIFICATE:
                last_problem = (f"{host}:{port} presents a certificate not issued for {server_name} "
                                f"({error.verify_message}): is the {peer} job's route there yet?")
            else:
                now = time.monotonic()
                first_refusal = now if first_refusal is None else first_refusal
                if now - first_refusal >= tls_grace:
                    fail(EXIT_TLS, f"TLS verification failed: the {peer} {server_name} at {host}:{port} presented "
                         f"a certificate that {cafile} does not accept ({error.verify_message}). {flag} must "
                         f"hold the CA that signed the {peer}'s certificate (in a cluster, the operator mounts "
                         f"it at {mounted}), and the certificate must be issued for {server_name}.")
        except OSError as error:  # includes ssl.SSLError other than verification, and DNS errors
            last_problem = str(error)
        if time.monotonic() - started >= connect_timeout:
            fail(EXIT_UNREACHABLE, f"cannot reach the {peer} {server_name} at {host}:{port} after "
                 f"{connect_timeout:.0f}s: {last_problem}; check that the {peer} job is running and its host "
                 "resolves")
        time.sleep(1.0)


def parse_peers(peers: str) -> tuple[str, list[str]]:
    """iflearner's ``--peers "<own listen address>;<peer host:port>;..."``:
    (where this party's peer server listens, the other parties' addresses)."""
    parts = [part.strip() for part in peers.split(";")]
    if len(parts) < 2 or not all(parts):
        raise SystemExit(f"--peers must be '<own listen address>;<peer host:port>[;...]' (e.g. "
                         f"'0.0.0.0:50001;job1.b.party.iflearner.com:30031'), got {peers!r}")
    for address in parts:
        split_host_port(address)
    return parts[0], parts[1:]


def _trace_peer_exchange(party: str, peer_client: ModuleType, peer_server: ModuleType,
                         controller: type) -> None:
    """``FL-PEER`` / ``FL-MASK`` lines for iflearner's secure aggregation
    (``--peers``), which logs only numbers: which peer's key and mask this
    party received (and through which trust file), which peers' requests
    its own peer server answered, and the mask it adds to every parameter
    it uploads (the masks of all parties sum to zero). Class-level, in this
    process only; iflearner's behaviour is unchanged."""
    client_cls, server_cls = peer_client.PeerClient, peer_server.PeerServer
    client_init, get_key, get_mask = client_cls.__init__, client_cls.get_DH_public_key, client_cls.get_SMPC_random_key
    serve, do_smpc = server_cls.send, controller.do_smpc

    def init(self: Any, server_addr: str, party_name: str, peer_cert: str | None = None) -> None:  # noqa: ANN401
        client_init(self, server_addr, party_name, peer_cert)
        self._fl_peer, self._fl_tls = server_addr, peer_cert or "none"

    def get_DH_public_key(self: Any) -> Any:  # noqa: ANN401, N802 - iflearner's names
        key = get_key(self)
        emit("PEER", party=party, peer=self._fl_peer, step="key", tls=self._fl_tls)
        return key

    def get_SMPC_random_key(self: Any, secret: str) -> float:  # noqa: ANN401, N802
        value = get_mask(self, secret)
        emit("PEER", party=party, peer=self._fl_peer, step="mask", tls=self._fl_tls)
        return value

    def send(self: Any, request: Any, context: Any) -> Any:  # noqa: ANN401
        response = serve(self, request, context)
        step = {"msg_dh_public_key": "key-served", "msg_smpc_random_key": "mask-served"}.get(request.type, request.type)
        emit("PEER", party=party, served=request.party_name, step=step)
        return response

    def smpc(self: Any) -> None:  # noqa: ANN401
        do_smpc(self)
        if self._args.peers is not None:
            emit("MASK", party=party, peers=len(parse_peers(self._args.peers)[1]), mask=float(self._sum_random_value))

    client_cls.__init__ = init
    client_cls.get_DH_public_key = get_DH_public_key
    client_cls.get_SMPC_random_key = get_SMPC_random_key
    server_cls.send = send
    controller.do_smpc = smpc


def _override_server_name(controller: Any, args: argparse.Namespace) -> None:  # noqa: ANN401
    """Rebuild iflearner's channel with the TLS name override, keeping its
    own message-size options; iflearner's client has no option for this."""
    import grpc
    from iflearner.communication.base import base_pb2_grpc, constant

    with open(args.cert, "rb") as f:
        roots = f.read()
    options = [
        ("grpc.max_message_length", constant.MAX_MSG_LENGTH),
        ("grpc.max_send_message_length", constant.MAX_MSG_LENGTH),
        ("grpc.max_receive_message_length", constant.MAX_MSG_LENGTH),
        ("grpc.ssl_target_name_override", args.server_name),
        # The :authority a gateway routes on, as if the name had resolved.
        ("grpc.default_authority", args.server_name),
    ]
    channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(roots), options=options)
    controller._network_client._stub = base_pb2_grpc.BaseStub(channel)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser: argparse.ArgumentParser = argument.parser
    parser.description = "A federation party: iflearner's client with a numpy logistic-regression trainer."
    parser.add_argument("--server-name", default=None,
                        help="TLS name to verify instead of --server's host (grpc.ssl_target_name_override)")
    parser.add_argument("--connect-timeout", type=float, default=600.0,
                        help="seconds to wait for the server to become reachable")
    parser.add_argument("--tls-grace", type=float, default=30.0,
                        help="seconds to keep retrying a certificate that fails verification")
    parser.add_argument("--samples", type=int, default=1000, help="training samples generated for this party")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cert is not None:
        server_name = args.server_name or split_host_port(args.server)[0]
        check_tls(args.server, server_name, args.cert, args.connect_timeout, args.tls_grace)
    if args.peers is not None:
        _, peers = parse_peers(args.peers)
        if args.peer_cert is not None:
            # Every peer's gateway and certificate, checked before iflearner dials them (it would
            # retry a refused certificate forever): other parties may start later, in any order.
            for peer in peers:
                check_tls(peer, split_host_port(peer)[0], args.peer_cert, args.connect_timeout, args.tls_grace,
                          peer="peer party", flag="--peer-cert", mounted="/etc/party-iflearner-secret.crt")
        _trace_peer_exchange(args.name, sys.modules["iflearner.communication.peer.peer_client"],
                             sys.modules["iflearner.communication.peer.peer_server"], train_client.Controller)
    trainer = LogisticTrainer(args.name, args.epochs, args.samples, args.lr, args.batch_size)
    controller = train_client.Controller(args, trainer)
    if args.cert is not None and args.server_name:
        _override_server_name(controller, args)
    emit("START", party=args.name, epochs=args.epochs, server=args.server, samples=args.samples)
    # Runs every epoch and ends the process itself (os._exit(0)) after the last.
    controller.run()


if __name__ == "__main__":
    main()
