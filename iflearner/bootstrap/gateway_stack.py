"""The bootstrap's gateway, declared: the Gateway API CRDs, Traefik, the
GatewayClass and IngressClass, and the shared Gateway with its default
certificate. The objects come from :mod:`iflearner.bootstrap.gateway`.

Stack config (``iflearner:*``):

- ``ingressController``: ``traefik`` (default) or ``none`` (the cluster has
  its own gateway/ingress controller; nothing of this module is declared
  except, with ``installGatewayApiCrds``, the CRDs).
- ``installGatewayApiCrds``: default true with Traefik. The standard-channel
  CRDs at the version Traefik's build speaks, from the toolchain (copied from
  the ``sigs.k8s.io/gateway-api`` module by ``scripts/build-toolchain.sh``).
- ``gatewayImage``, ``gatewayServiceType`` (NodePort), ``gatewayHttpsNodePort``
  (30031; 0 for any), ``gatewayClusterIP`` (pin the Service's ClusterIP, e.g.
  to ``ingressAddress`` when job hosts resolve to it inside the cluster).
- ``installIngressNginx: false`` from older stack configs still means
  ``ingressController: none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from iflearner.bootstrap import gateway
from iflearner.tlsresources import CertificateAuthority, SignedCertificate

CONTROLLERS = ("traefik", "none")
GATEWAY_API_CRDS = "gateway-api-crds.yaml"
DEFAULT_IMAGE = "docker.io/library/traefik:v3.6.12"  # upstream's image of the version the toolchain builds


@dataclass(frozen=True)
class GatewaySetup:
    controller: str
    install_crds: bool
    config: gateway.GatewayConfig


def read_config(config: pulumi.Config, ingress_address: str | None, gateway_class_name: str,
                job_namespaces: tuple[str, ...] | None = None) -> GatewaySetup:
    """``job_namespaces``: the namespaces Traefik serves besides its own (None: every namespace)."""
    controller = config.get("ingressController")
    if controller is None:
        controller = "none" if config.get_bool("installIngressNginx") is False else "traefik"
    if controller not in CONTROLLERS:
        raise ValueError(f"iflearner:ingressController must be one of {', '.join(CONTROLLERS)}, got {controller!r}")
    node_port = config.get_int("gatewayHttpsNodePort")
    install_crds = config.get_bool("installGatewayApiCrds")
    return GatewaySetup(
        controller=controller,
        install_crds=install_crds if install_crds is not None else controller == "traefik",
        config=gateway.GatewayConfig(
            image=config.get("gatewayImage") or DEFAULT_IMAGE,
            gateway_class_name=gateway_class_name,
            service_type=config.get("gatewayServiceType") or "NodePort",
            https_node_port=gateway.HTTPS_NODE_PORT if node_port is None else (node_port or None),
            cluster_ip=config.get("gatewayClusterIP"),
            ingress_address=ingress_address,
            job_namespaces=job_namespaces,
        ),
    )


def gateway_api_crds_file() -> Path:
    from iflearner import toolchain

    path = toolchain.tools_dir() / GATEWAY_API_CRDS
    if not path.is_file():
        raise toolchain.ToolchainMissingError(
            f"the Gateway API CRDs are not installed (looked for {path}); run "
            "`scripts/build-toolchain.sh traefik` (or `make setup`)")
    return path


def declare(setup: GatewaySetup, provider: k8s.Provider, ca: CertificateAuthority,
            after: Sequence[pulumi.Resource] = ()) -> list[pulumi.Resource]:
    """Everything of the gateway; the returned resources are what jobs depend on. Traefik starts
    ``after`` these (the labels of the namespaces it serves)."""
    opts = pulumi.ResourceOptions(provider=provider)
    declared: list[pulumi.Resource] = []
    if setup.install_crds:
        declared.append(k8s.yaml.v2.ConfigFile("gateway-api-crds", file=str(gateway_api_crds_file()), opts=opts))
    if setup.controller != "traefik":
        return declared
    after_crds = pulumi.ResourceOptions(provider=provider, depends_on=list(declared))
    workload = k8s.yaml.v2.ConfigGroup(
        "gateway", objs=gateway.traefik(setup.config),
        # Traefik's readiness is its probes'; `up` must not wait for an image pull.
        skip_await=True, opts=pulumi.ResourceOptions(provider=provider, depends_on=list(after)))
    classes = k8s.yaml.v2.ConfigGroup("gateway-classes", objs=gateway.classes(setup.config), opts=after_crds)
    certificate = SignedCertificate(
        "gateway-default-certificate", ca_cert_pem=ca.cert_pem, ca_key_pem=ca.private_key_pem,
        common_name="iflearner-gateway", dns_names=["iflearner-gateway"], validity_hours=24 * 365)
    secret = k8s.core.v1.Secret(
        "gateway-default-tls",
        metadata={"name": gateway.DEFAULT_CERT_SECRET, "namespace": gateway.NAMESPACE,
                  "labels": dict(gateway.LABELS)},
        type="kubernetes.io/tls",
        string_data={"tls.crt": certificate.cert_pem, "tls.key": certificate.private_key_pem},
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[workload]))
    shared = k8s.yaml.v2.ConfigGroup(
        "shared-gateway", objs=[gateway.shared_gateway(setup.config)], skip_await=True,
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[*declared, classes, secret, workload]))
    return [*declared, workload, classes, secret, shared]
