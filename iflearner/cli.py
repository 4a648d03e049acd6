"""The ``iflearner-operator`` command line: one sub-command per user task.

This module only parses arguments and maps results to exit codes and text;
the work happens in the modules it calls.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID_INPUT = 2


def _cluster(args: argparse.Namespace) -> int:
    from iflearner.localcluster import ClusterAlreadyRunningError, ClusterError, LocalCluster
    from iflearner.toolchain import ToolchainMissingError

    cluster = LocalCluster(args.data_dir)
    if args.cluster_command == "up":
        try:
            state = cluster.up(progress=lambda msg: print(f"cluster: {msg}", file=sys.stderr))
        except ClusterAlreadyRunningError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILED
        except (ClusterError, ToolchainMissingError, TimeoutError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILED
        print(state.kubeconfig)
        return EXIT_OK
    if args.cluster_command == "down":
        stopped = cluster.down()
        print("local cluster stopped" if stopped else "no local cluster was running", file=sys.stderr)
        return EXIT_OK
    state = cluster.running_state()
    if state is None:
        print("no local cluster is running", file=sys.stderr)
        return EXIT_FAILED
    print(state.kubeconfig)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iflearner-operator",
        description="Deploy federated learning jobs (IflearnerJob) as Pulumi stacks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    cluster = commands.add_parser("cluster", help="a real local control plane (etcd, kube-apiserver, kwok)")
    cluster.add_argument("cluster_command", choices=["up", "down", "status"])
    cluster.add_argument("--data-dir", type=Path, default=None,
                         help="where the cluster keeps its state (default ~/.cache/iflearner-operator/local-cluster)")
    cluster.set_defaults(handler=_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))
