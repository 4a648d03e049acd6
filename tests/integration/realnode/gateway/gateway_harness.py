"""Shared by the gateway's real-node tests and fixtures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller_harness import ControllerProcess
from kubernetes import client

from iflearner.bootstrap.cli_runner import BootstrapProject

# Job hosts resolve to this address (their DNS records), pinned as the gateway Service's ClusterIP.
GATEWAY_ADDRESS = "10.96.200.1"
# The job namespaces of the bootstrap (one per test): Traefik serves these and no others, so they
# exist before `pulumi up` makes its Roles there.
JOB_NAMESPACES = ("gw-1", "gw-2", "gw-3", "gw-4")


@dataclass(frozen=True)
class GatewayCluster:
    kubeconfig: Path
    api: client.ApiClient
    grpcapp_image: str
    traefik_image: str
    controller: ControllerProcess
    bootstrap: BootstrapProject
    free_namespaces: list[str]  # job namespaces no test has used yet
