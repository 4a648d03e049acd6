"""The bootstrap program: everything a cluster needs before jobs run.

Run by the top-level ``__main__.py`` with ``pulumi up``; each stack in
``stacks/`` is one cluster (server side, a party, or an all-in-one demo).
It reads stack config, describes the objects with the pure helpers of this
package, and declares them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from iflearner.bootstrap import gateway_stack
from iflearner.bootstrap.coredns import CorefileBlock, RecordsVolume
from iflearner.bootstrap.corefile import RECORDS_DIR, ZoneTemplate, render_block
from iflearner.bootstrap.generated_secret import GeneratedSecret
from iflearner.bootstrap.jobs_guard import DeclaredResources
from iflearner.bootstrap.operator import DEFAULT_BACKEND_URL, OperatorConfig, deployment, rbac
from iflearner.bootstrap.rbac import is_cluster_wide, parse_job_namespaces
from iflearner.bootstrap.tenancy import labelled_namespaces, namespace_labels, tenancy_settings
from iflearner.desired import BOOTSTRAP_DNS_RECORD_SHARDS, ClusterSettings, Transport, dns_configmap_names
from iflearner.operator_record import BACKEND_KEY, SETTINGS_CONFIGMAP, SETTINGS_KEY, redact_url
from iflearner.tlsresources import CertificateAuthority

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crd" / "iflearnerjob.yaml"
CLUSTER_ROLES = ("server", "party", "all")


def trust_bundles(role: str, own_cas: list[str], peers: dict[str, list[str]]) -> dict[str, str]:
    """server.crt verifies server hosts, party.crt party hosts: own CAs (the issuing one and,
    during a rotation, the retiring one) where this cluster issues that side's certificates,
    plus the peers' CAs."""

    def bundle(side: str) -> str:
        certs = (list(own_cas) if role in (side, "all") else []) + list(peers.get(side, []))
        return "".join(c if c.endswith("\n") else c + "\n" for c in certs)

    return {"server.crt": bundle("server"), "party.crt": bundle("party")}


def ca_generations(issuing: int | None, retiring: int | None) -> tuple[int, int | None]:
    """(issuing, retiring) CA generations from ``caGeneration`` (default 0) and, while a rotation's
    overlap lasts, ``caRetiringGeneration`` (the one being replaced)."""
    issuing = issuing or 0
    if issuing < 0 or (retiring is not None and not 0 <= retiring < issuing):
        raise ValueError(f"iflearner:caRetiringGeneration ({retiring}) must be a generation older than "
                         f"iflearner:caGeneration ({issuing}); to rotate, set caRetiringGeneration to the current "
                         "caGeneration and raise caGeneration by one; to finish, remove caRetiringGeneration")
    return issuing, retiring


def _cluster_ca(generation: int, common_name: str, validity_hours: int,
                domains: tuple[str, ...]) -> CertificateAuthority:
    # Generation 0 keeps the name every cluster had before rotations existed. The name
    # constraints (jobDomains) are part of a CA when it is made: an existing CA keeps what it
    # has, and the next rotation's CA carries them (README: Security model).
    suffix = f"-g{generation}" if generation else ""
    return CertificateAuthority(f"cluster-ca{suffix}", common_name=f"{common_name} g{generation}".removesuffix(" g0"),
                                validity_hours=validity_hours, permitted_domains=list(domains))


def bootstrap() -> None:
    config = pulumi.Config("iflearner")
    role = config.get("clusterRole") or "all"
    if role not in CLUSTER_ROLES:
        raise ValueError(f"iflearner:clusterRole must be one of {', '.join(CLUSTER_ROLES)}, got {role!r}")
    # The kubeconfig: stack config, else $KUBECONFIG (as kubectl), else in-cluster.
    kubeconfig_path = config.get("kubeconfig") or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    kubeconfig = Path(kubeconfig_path).expanduser().read_text() if kubeconfig_path else None
    # New clusters route jobs through Gateway API; `transport: ingress` keeps Ingresses.
    try:
        settings = ClusterSettings(ingress_address=config.get("ingressAddress"),
                                   transport=config.get("transport") or Transport.GATEWAY.value,
                                   dns_record_shards=config.get_int("dnsRecordShards") or BOOTSTRAP_DNS_RECORD_SHARDS,
                                   **tenancy_settings(config.get, config.get_object))
    except ValueError as error:  # before anything is declared: a clear error, nothing half-made
        raise ValueError(f"iflearner:{error}") from None
    if not settings.job_domains:
        pulumi.log.warn("iflearner:jobDomains is not set: jobs may ask for a certificate, a route and DNS answers "
                        "for any host; set it to the federation's domains (README: Security model)")
    # Raw text: a plain string or an empty list gets an error saying what to write.
    job_namespaces = parse_job_namespaces(config.get("jobNamespaces"))
    gateway_setup = gateway_stack.read_config(config, settings.ingress_address, settings.gateway_class_name,
                                              None if is_cluster_wide(job_namespaces) else job_namespaces)
    zones = [ZoneTemplate(z["zone"], z["address"]) for z in (config.get_object("zones") or [])]
    peers: dict[str, list[str]] = config.get_object("peerCaCertificates") or {}
    operator = OperatorConfig(
        image=config.get("operatorImage") or OperatorConfig.image,
        image_pull_policy=config.get("operatorImagePullPolicy") or OperatorConfig.image_pull_policy,
        replicas=config.get_int("operatorReplicas") if config.get_int("operatorReplicas") is not None else 1,
        backend_url=config.get("stateBackendUrl"),
        backend_secret=config.get("stateBackendSecret"),
        secrets_provider=config.get("secretsProvider") or OperatorConfig.secrets_provider,
        secrets_provider_secret=config.get("secretsProviderSecret"),
        service_account_annotations=dict(config.get_object("operatorServiceAccountAnnotations") or {}),
        state_storage_class=config.get("stateStorageClass"),
        state_host_path=config.get("stateHostPath"),
        job_namespaces=job_namespaces,
    )
    operator.validate(settings)  # before anything is declared: a clear error, nothing half-made
    passphrase = config.get_secret("statePassphrase") or GeneratedSecret("operator-state-passphrase").value

    declared = DeclaredResources()
    provider = k8s.Provider("cluster", kubeconfig=kubeconfig)
    opts = pulumi.ResourceOptions(provider=provider)

    crd = k8s.yaml.v2.ConfigFile("crd", file=str(CRD_FILE), opts=opts)
    namespace = k8s.core.v1.Namespace(
        "operator-namespace", metadata={"name": settings.operator_namespace}, opts=opts
    )
    in_namespace = pulumi.ResourceOptions(provider=provider, depends_on=[namespace])

    # A CA rotation (README): the retiring CA stays in the Secret and the bundles until the
    # operator's signer has switched issuing (controller/carotation.py) and the user finishes it.
    generation, retiring_generation = ca_generations(config.get_int("caGeneration"),
                                                     config.get_int("caRetiringGeneration"))
    ca_name = config.get("caCommonName") or f"iflearner {role} cluster CA"
    ca_validity = config.get_int("caValidityHours") or 24 * 365 * 5
    ca = _cluster_ca(generation, ca_name, ca_validity, settings.job_domains)
    retiring = _cluster_ca(retiring_generation, ca_name, ca_validity, settings.job_domains) \
        if retiring_generation is not None else None
    ca_data: dict[str, pulumi.Input[str]] = {"tls.crt": ca.cert_pem, "tls.key": ca.private_key_pem}
    own_cas = [ca.cert_pem]
    if retiring is not None:
        ca_data |= {"retiring.crt": retiring.cert_pem, "retiring.key": retiring.private_key_pem}
        own_cas.append(retiring.cert_pem)
    k8s.core.v1.Secret(
        "cluster-ca-secret",
        metadata={"name": settings.ca_secret_name, "namespace": settings.operator_namespace},
        type="kubernetes.io/tls",
        string_data=ca_data,
        opts=in_namespace,
    )
    # Pod Security admission on the job namespaces: the API server refuses what the level forbids,
    # from anyone, the operator included. Server-side apply of these labels only: destroy removes them.
    # Traefik's NGINX provider reads the namespace label selector once, at its start: labels first.
    namespace_labelling = [
        k8s.core.v1.NamespacePatch(
            f"pod-security-{job_namespace}",
            metadata={"name": job_namespace, "labels": namespace_labels(settings.pod_security)},
            opts=opts,
        )
        for job_namespace in labelled_namespaces(operator.job_namespaces, settings.operator_namespace)
    ]
    k8s.core.v1.ConfigMap(
        "trust-bundle",
        metadata={"name": settings.trust_configmap_name, "namespace": settings.operator_namespace},
        data=pulumi.Output.all(*own_cas).apply(lambda pems: trust_bundles(role, list(pems), peers)),
        opts=in_namespace,
    )
    k8s.core.v1.Secret(
        "operator-state-passphrase",
        metadata={"name": OperatorConfig.passphrase_secret, "namespace": settings.operator_namespace},
        string_data={"passphrase": passphrase},
        opts=in_namespace,
    )
    # Also the record `preview` reads to use the operator's backend and settings.
    k8s.core.v1.ConfigMap(
        "operator-settings",
        metadata={"name": SETTINGS_CONFIGMAP, "namespace": settings.operator_namespace},
        data={SETTINGS_KEY: _settings_yaml(settings), BACKEND_KEY: _recorded_backend(operator)},
        opts=in_namespace,
    )
    # The gateway (Traefik, Gateway API CRDs, classes, the shared Gateway) in place of ingress-nginx;
    # before the operator, which watches Gateways and GRPCRoutes only where the API serves them.
    gateway_resources = gateway_stack.declare(gateway_setup, provider, ca, after=namespace_labelling)
    k8s.yaml.v2.ConfigGroup(
        "operator", objs=[*rbac(settings, operator.job_namespaces, operator.service_account_annotations),
                          *deployment(settings, operator)],
        # The operator's readiness is the cluster's to report (probes); a stack
        # that waited would block `up` on image pulls and volume binding.
        skip_await=True,
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[namespace, crd, *gateway_resources]),
    )

    # DNS: job stacks server-side-apply their zone files into this ConfigMap;
    # CoreDNS mounts it and serves it with the `auto` plugin.
    shards = [
        k8s.core.v1.ConfigMap(
            "dns-records" if index == 0 else f"dns-records-{index}",
            metadata={"name": name, "namespace": settings.dns_namespace},
            opts=pulumi.ResourceOptions(provider=provider, ignore_changes=["data"]),
        )
        for index, name in enumerate(dns_configmap_names(settings))
    ]
    RecordsVolume("coredns-records-volume", configmaps=list(dns_configmap_names(settings)), mount_path=RECORDS_DIR,
                  kubeconfig=kubeconfig, opts=pulumi.ResourceOptions(depends_on=shards))
    CorefileBlock("corefile", block=render_block(zones, (*settings.job_domains, *settings.peer_domains)),
                  kubeconfig=kubeconfig,
                  opts=pulumi.ResourceOptions(depends_on=shards))


    # Deleted first on destroy: refuses while jobs exist, before anything is touched.
    declared.guard("jobs-guard", kubeconfig)

    pulumi.export("caCertificate", ca.cert_pem)
    pulumi.export("operatorNamespace", settings.operator_namespace)
    pulumi.export("clusterRole", role)


def _recorded_backend(operator: OperatorConfig) -> str:
    """The backend for the record `preview` reads; empty when it is only in a Secret."""
    if operator.backend_url:
        return redact_url(operator.backend_url)
    return "" if operator.backend_secret else DEFAULT_BACKEND_URL


def _settings_yaml(settings: ClusterSettings) -> str:
    import dataclasses

    import yaml

    values: dict[str, Any] = {k: v for k, v in dataclasses.asdict(settings).items() if v is not None}
    return yaml.safe_dump(values, sort_keys=True)
