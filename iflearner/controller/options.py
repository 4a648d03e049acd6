"""Options of ``iflearner-operator run``: flags, their environment variables, and the dataclass.

``add_run_arguments(parser)`` adds the flags to an argparse (sub)parser;
``options_from_args(args)`` turns the parsed namespace into
``ControllerOptions``. Every flag also reads an environment variable (shown
in its help) so a Deployment can configure the operator either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iflearner.desired import ClusterSettings, Transport

if TYPE_CHECKING:
    from iflearner.stackrunner import RunnerSettings

PASSPHRASE_ENV = "PULUMI_CONFIG_PASSPHRASE"
PASSPHRASE_FILE_ENV = "PULUMI_CONFIG_PASSPHRASE_FILE"
SECRETS_PROVIDER_ENV = "IFLEARNER_SECRETS_PROVIDER"
BACKEND_ENVS = ("IFLEARNER_BACKEND_URL", "PULUMI_BACKEND_URL")
DEFAULT_LEASE_NAME = "iflearner-operator-leader"  # as iflearner.bootstrap.operator.LEASE_NAME


def default_state_dir() -> Path:
    return Path.home() / ".cache" / "iflearner-operator" / "state"


@dataclass
class ControllerOptions:
    """Everything the controller needs to run."""

    kubeconfig: Path | None = None  # None: in-cluster when there, else the default kubeconfig
    context: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    workers: int = 4
    resync_seconds: float = 600.0
    state_dir: Path = field(default_factory=default_state_dir)
    backend_url: str | None = None  # None: file:// under state_dir
    passphrase_file: Path | None = None  # else PULUMI_CONFIG_PASSPHRASE
    secrets_provider: str = "passphrase"  # or a KMS URL: awskms://, gcpkms://, azurekeyvault://, hashivault://
    metrics_address: str = ":8080"
    health_address: str | None = None  # None: probes are served on the metrics address
    leader_elect: bool = False
    lease_namespace: str = "iflearner-system"
    lease_name: str = DEFAULT_LEASE_NAME
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str | None = None
    shutdown_grace: float = 25.0
    pulumi_run_timeout: float = 600.0  # a pulumi up/destroy running longer is stopped
    log_level: str = "info"
    settings: ClusterSettings = field(default_factory=ClusterSettings)

    def runner_settings(self) -> RunnerSettings:
        """Where stacks keep state, and the passphrase (see :func:`iflearner.settings.runner_settings`)."""
        from iflearner.settings import runner_settings

        return runner_settings(self.backend_url, self.passphrase_file, self.state_dir, self.secrets_provider)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _env_bool(name: str) -> bool:
    return (os.environ.get(name) or "").lower() in ("1", "true", "yes", "on")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _transport(text: str) -> str:
    if text not in {t.value for t in Transport}:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(t.value for t in Transport)}")
    return text


# A namespace name is a DNS label; anything else would make an informer fail
# forever (never ready) instead of stopping with a message.
_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _namespace(text: str) -> str:
    name = text.strip()
    if not _NAMESPACE_RE.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a namespace name (at most 63 lowercase letters, digits and '-', starting and "
            "ending with a letter or digit); omit --namespace to watch every namespace")
    return name


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("must be a number between 0 and 1 (exclusive), e.g. 0.667")
    return value


def _seconds(text: str) -> float:
    value = float(text.removesuffix("s"))
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``iflearner-operator run`` to ``parser``."""
    defaults = ClusterSettings()
    cluster = parser.add_argument_group("cluster access")
    cluster.add_argument("--kubeconfig", type=Path, default=_env("KUBECONFIG"),
                         help="kubeconfig file (env KUBECONFIG); default: in-cluster config, else ~/.kube/config")
    cluster.add_argument("--context", default=_env("IFLEARNER_CONTEXT"),
                         help="kubeconfig context (env IFLEARNER_CONTEXT)")
    cluster.add_argument("--namespace", "-n", dest="namespaces", action="append", type=_namespace,
                         default=None, metavar="NAMESPACE",
                         help="namespace to watch; repeat for several (env IFLEARNER_NAMESPACES, comma "
                              "separated); default: all namespaces, which needs cluster-wide list/watch. "
                              "The bootstrap passes its iflearner:jobNamespaces, where its RBAC grants access")

    loop = parser.add_argument_group("reconcile loop")
    loop.add_argument("--workers", type=_positive_int, default=int(_env("IFLEARNER_WORKERS", "4") or 4),
                      help="jobs reconciled in parallel (env IFLEARNER_WORKERS; default 4)")
    loop.add_argument("--resync-period", type=_seconds, default=float(_env("IFLEARNER_RESYNC", "600") or 600),
                      dest="resync_seconds",
                      help="seconds between full resyncs of every job (env IFLEARNER_RESYNC; default 600)")
    loop.add_argument("--shutdown-grace", type=_seconds, default=25.0,
                      help="seconds to let in-flight reconciles finish on SIGTERM (default 25)")
    loop.add_argument("--pulumi-run-timeout", type=_seconds, default=600.0,
                      help="seconds a pulumi up/destroy may take before it is stopped (default 600)")

    state = parser.add_argument_group("Pulumi state")
    state.add_argument("--state-dir", type=Path, default=Path(_env("IFLEARNER_STATE_DIR") or default_state_dir()),
                       help="work directory, and the file:// state when no backend is set "
                            "(env IFLEARNER_STATE_DIR)")
    state.add_argument("--backend-url", default=_env(BACKEND_ENVS[0]) or _env(BACKEND_ENVS[1]),
                       help=f"Pulumi DIY backend: file://, s3://, postgres://... (env {' or '.join(BACKEND_ENVS)}); "
                            "default: file://<state-dir>/state")
    state.add_argument("--passphrase-file", type=Path, default=_env(PASSPHRASE_FILE_ENV),
                       help=f"file holding the stack-secrets passphrase (env {PASSPHRASE_FILE_ENV}); "
                            f"else env {PASSPHRASE_ENV}")
    state.add_argument("--secrets-provider", default=_env(SECRETS_PROVIDER_ENV, "passphrase"),
                       help="what encrypts new stacks' secrets: passphrase (default), or a KMS key URL such as "
                            "awskms://alias/iflearner-jobs?region=us-east-1, with its credentials in the "
                            f"environment (env {SECRETS_PROVIDER_ENV})")

    ops = parser.add_argument_group("operations")
    ops.add_argument("--metrics-address", default=_env("IFLEARNER_METRICS_ADDRESS", ":8080"),
                     help="address serving /metrics (and the probes) (env IFLEARNER_METRICS_ADDRESS; "
                          "default :8080; port 0 picks a free one)")
    ops.add_argument("--health-address", default=_env("IFLEARNER_HEALTH_ADDRESS"),
                     help="another address serving /healthz and /readyz (env IFLEARNER_HEALTH_ADDRESS)")
    ops.add_argument("--leader-elect", action=argparse.BooleanOptionalAction,
                     default=_env_bool("IFLEARNER_LEADER_ELECT"),
                     help="Lease-based leader election, for more than one replica (env IFLEARNER_LEADER_ELECT)")
    ops.add_argument("--leader-election-namespace", "--lease-namespace", dest="lease_namespace",
                     default=_env("IFLEARNER_LEASE_NAMESPACE", "iflearner-system"),
                     help="namespace of the leader Lease (default iflearner-system)")
    ops.add_argument("--leader-election-name", "--lease-name", dest="lease_name", default=DEFAULT_LEASE_NAME,
                     help=f"name of the leader Lease (default {DEFAULT_LEASE_NAME})")
    ops.add_argument("--lease-duration", type=_seconds, default=15.0, help="seconds (default 15)")
    ops.add_argument("--renew-deadline", type=_seconds, default=10.0, help="seconds (default 10)")
    ops.add_argument("--retry-period", type=_seconds, default=2.0, help="seconds (default 2)")
    ops.add_argument("--identity", default=_env("POD_NAME"),
                     help="leader-election identity (env POD_NAME; default hostname_pid)")
    ops.add_argument("--log-level", default=_env("IFLEARNER_LOG_LEVEL", "info"),
                     choices=["debug", "info", "warning", "error"], help="log level (default info)")

    jobs = parser.add_argument_group("cluster settings (as set up by the bootstrap stack)")
    jobs.add_argument("--cluster-settings", type=Path, default=_env("IFLEARNER_CLUSTER_SETTINGS"),
                      help="YAML file of cluster settings (camelCase or snake_case keys: operatorNamespace, "
                           "caSecretName, trustConfigmapName, ingressClassName, ingressAddress, dnsNamespace, "
                           "dnsConfigmapName, certificateValidityHours, certificateValiditySeconds, "
                           "certificateRenewalFraction, caRotationWindowSeconds, dnsRecordShards); "
                           "flags below override it")
    overrides = (
        ("--operator-namespace", "operator_namespace", str, "namespace of the CA Secret and trust ConfigMap"),
        ("--ca-secret", "ca_secret_name", str, "TLS Secret of the cluster CA"),
        ("--trust-configmap", "trust_configmap_name", str, "ConfigMap with server.crt and party.crt"),
        ("--ingress-class", "ingress_class_name", str, "default IngressClass of jobs"),
        ("--ingress-address", "ingress_address", str, "IPv4 of this cluster's ingress, for the jobs' DNS records"),
        ("--dns-namespace", "dns_namespace", str, "namespace of the DNS records ConfigMap"),
        ("--dns-configmap", "dns_configmap_name", str, "ConfigMap the cluster DNS serves job zones from"),
        ("--dns-record-shards", "dns_record_shards", _positive_int,
         "records ConfigMaps (the bootstrap's dnsRecordShards): shard i>0 is --dns-configmap plus -i"),
        ("--certificate-validity-hours", "certificate_validity_hours", _positive_int, "validity of job certificates"),
        ("--certificate-validity-seconds", "certificate_validity_seconds", _positive_int,
         "validity of job certificates in seconds, overriding the hours (short lifetimes for tests)"),
        ("--certificate-renewal-fraction", "certificate_renewal_fraction", _fraction,
         "renew a job certificate when this fraction of its lifetime has passed"),
        ("--ca-rotation-window-seconds", "ca_rotation_window_seconds", _positive_int,
         "during a CA rotation, switch issuing to the new CA this long after its notBefore even if a running "
         "client Pod still lacks it"),
        ("--transport", "transport", _transport, "how jobs are reached: gateway (Gateway API) or ingress"),
        ("--gateway-class", "gateway_class_name", str, "GatewayClass of the jobs' Gateways"),
        ("--gateway-listener-port", "gateway_listener_port", _positive_int,
         "port of the jobs' Gateway listeners (the gateway's TLS entry point)"),
    )
    for flag, dest, kind, text in overrides:
        jobs.add_argument(flag, dest=f"setting_{dest}", type=kind, default=None,
                          help=f"{text} (default {getattr(defaults, dest)})")


_SETTING_FIELDS = (
    "operator_namespace", "ca_secret_name", "trust_configmap_name", "ingress_class_name", "ingress_address",
    "dns_namespace", "dns_configmap_name", "certificate_validity_hours", "transport", "gateway_class_name",
    "gateway_listener_port", "certificate_validity_seconds", "certificate_renewal_fraction",
    "ca_rotation_window_seconds", "dns_record_shards",
)


def options_from_args(args: argparse.Namespace) -> ControllerOptions:
    """``ControllerOptions`` from the namespace parsed with :func:`add_run_arguments`."""
    namespaces = list(args.namespaces or [])
    if not namespaces and os.environ.get("IFLEARNER_NAMESPACES"):
        try:
            namespaces = [_namespace(n) for n in os.environ["IFLEARNER_NAMESPACES"].split(",") if n.strip()]
        except argparse.ArgumentTypeError as error:
            from iflearner.settings import SettingsError

            raise SettingsError(f"IFLEARNER_NAMESPACES: {error}") from None
    from iflearner.settings import load_cluster_settings

    settings = load_cluster_settings(Path(args.cluster_settings) if args.cluster_settings else None)
    changes = {name: getattr(args, f"setting_{name}") for name in _SETTING_FIELDS
               if getattr(args, f"setting_{name}", None) is not None}
    if changes:
        settings = dataclasses.replace(settings, **changes)
    return ControllerOptions(
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        context=args.context,
        namespaces=tuple(dict.fromkeys(n.strip() for n in namespaces if n.strip())),
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        state_dir=Path(args.state_dir),
        backend_url=args.backend_url or None,
        passphrase_file=Path(args.passphrase_file) if args.passphrase_file else None,
        secrets_provider=args.secrets_provider,
        metrics_address=args.metrics_address,
        health_address=args.health_address or None,
        leader_elect=args.leader_elect,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        identity=args.identity,
        shutdown_grace=args.shutdown_grace,
        pulumi_run_timeout=args.pulumi_run_timeout,
        log_level=args.log_level,
        settings=settings,
    )
