"""The ``iflearner-operator`` command line: one sub-command per user task.

This module only parses arguments and maps results to exit codes and text;
the work happens in the modules it calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID_INPUT = 2


def _cluster(args: argparse.Namespace) -> int:
    from iflearner.localcluster import ClusterAlreadyRunningError, ClusterError, LocalCluster
    from iflearner.toolchain import ToolchainMissingError

    cluster = LocalCluster(args.data_dir)
    if args.cluster_command == "up":
        try:
            state = cluster.up(progress=lambda msg: print(f"cluster: {msg}", file=sys.stderr), node=args.node,
                               slot=args.slot)
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


def _format_step(step: dict[str, str]) -> str:
    urn = step["urn"]
    name = urn.rsplit("::", 1)[-1]
    symbol = {"create": "+", "delete": "-", "update": "~", "replace": "+-", "create-replacement": "+-",
              "delete-replaced": "--", "read": ">"}.get(step["op"], "*")
    return f"  {symbol} {step['op']:<10} {step['type']:<45} {name}"


def _preview(args: argparse.Namespace) -> int:
    from iflearner.desired import ClusterSettings, desired_resources
    from iflearner.job import InvalidJobError, load_job_file, stack_name
    from iflearner.operator_record import read_operator_record
    from iflearner.program import job_program
    from iflearner.settings import SettingsError, kubeconfig_text, preview_settings
    from iflearner.stackrunner import StackRunner

    try:
        job = load_job_file(args.file)
    except InvalidJobError as error:
        for problem in error.problems:
            print(f"invalid: {problem.field}: {problem.message}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    try:
        kubeconfig = kubeconfig_text(args.kubeconfig)
        record = read_operator_record(kubeconfig, ClusterSettings().operator_namespace)
        chosen = preview_settings(args.backend_url, args.passphrase_file, args.cluster_settings, record)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    print(f"preview: using {chosen.origin}", file=sys.stderr)
    live_uid = _live_job_uid(kubeconfig, job.namespace, job.name)
    if job.uid is None and live_uid is not None:
        # The job as the operator sees it: its objects carry the live job's uid.
        job = dataclasses.replace(job, uid=live_uid)
    settings = chosen.cluster
    runner = StackRunner(chosen.runner)
    desired = desired_resources(job, settings)
    stack = stack_name(job)
    tls = _served_tls(kubeconfig, job.namespace, desired.names.tls_secret)
    result = runner.preview(stack, job_program(desired, settings, kubeconfig, tls))
    if args.output == "json":
        print(json.dumps({
            "job": {"namespace": job.namespace, "name": job.name, "role": str(job.role), "host": job.host},
            "stack": stack, "succeeded": result.succeeded, "changes": result.changes,
            "steps": result.steps, "error": result.error,
        }, indent=2))
    else:
        print(f"Preview of {job.namespace}/{job.name} ({job.role}, {job.host}), stack {stack}:")
        for step in result.steps:
            print(_format_step(step))
        if result.succeeded:
            summary = ", ".join(f"{count} to {op}" for op, count in sorted(result.changes.items()) if count)
            print(f"Changes: {summary or 'none'}. Nothing was changed in the cluster.")
        else:
            print(f"error: preview failed: {result.error}", file=sys.stderr)
    return EXIT_OK if result.succeeded else EXIT_FAILED


def _read_live(kubeconfig: str | None, read: Callable[[Any], Any]) -> Any:
    """``read(api_client)`` against the cluster; None when it cannot answer (not there, no access)."""
    import yaml
    from kubernetes import client, config

    try:
        if kubeconfig is None:
            config.load_incluster_config()
            api = client.ApiClient()
        else:
            api = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
        try:
            return read(api)
        finally:
            api.close()
    except Exception:  # noqa: BLE001 - no object there, or no access: preview the file as a new job
        return None


def _live_job_uid(kubeconfig: str | None, namespace: str, name: str) -> str | None:
    """The uid of the job of that name in the cluster, if it exists there (and can be read)."""
    from kubernetes import client

    live = _read_live(kubeconfig, lambda api: client.CustomObjectsApi(api).get_namespaced_custom_object(
        "git.iflytek.com", "v1", namespace, "iflearnerjobs", name, _request_timeout=10))
    return str(((live or {}).get("metadata") or {}).get("uid") or "") or None


# What preview shows for a certificate the operator's signer has not issued yet: preview never
# reads the CA (only the operator's signer does), so it cannot sign one itself.
PENDING_CERTIFICATE = "(issued by the operator's signer when the job is applied)"


def _served_tls(kubeconfig: str | None, namespace: str, secret: str) -> dict[str, str]:
    """The job's TLS Secret content as the cluster has it, else placeholders."""
    import base64

    from kubernetes import client

    live = _read_live(kubeconfig, lambda api: client.CoreV1Api(api).read_namespaced_secret(
        secret, namespace, _request_timeout=10))
    data = (live.data if live is not None else None) or {}
    if "tls.crt" in data and "tls.key" in data:
        return {key: base64.b64decode(data[key]).decode() for key in ("tls.crt", "tls.key")}
    return {"tls.crt": PENDING_CERTIFICATE, "tls.key": PENDING_CERTIFICATE}


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that talks to a cluster and a state backend."""
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="kubeconfig file (default: $KUBECONFIG, in-cluster, then ~/.kube/config)")
    parser.add_argument("--cluster-settings", type=Path, default=None,
                        help="YAML file of cluster settings (CA secret, ingress class, DNS ConfigMap, ...)")
    parser.add_argument("--backend-url", default=None,
                        help="Pulumi DIY backend URL (file://, s3://, ...); default: the operator's backend "
                             "as the bootstrap recorded it in the cluster, else a local file:// directory")
    parser.add_argument("--passphrase-file", type=Path, default=None,
                        help="file holding the passphrase that encrypts stack secrets "
                             "(default: $PULUMI_CONFIG_PASSPHRASE)")


def _demo(args: argparse.Namespace) -> int:
    from iflearner.local.demo import Demo, DemoError, default_data_dir

    node = args.node
    if node == "auto":
        from iflearner.localcluster.realnode import real_node_unavailable

        reason = real_node_unavailable()
        node = "kwok" if reason else "real"
        if reason and not args.down:
            print(f"demo: this machine cannot run a real node ({reason}); running the simulated demo "
                  "(kwok: Pods reach Running without containers, nothing trains)", flush=True)
    try:
        demo = Demo((args.data_dir or default_data_dir()).resolve(), timeout=args.timeout, node=node,
                    topology=args.topology)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    demo.data_dir.mkdir(parents=True, exist_ok=True)
    if args.down:
        return EXIT_OK if demo.down() else EXIT_FAILED
    try:
        return demo.run(keep=args.keep)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001 - the demo reports, cleans up and exits non-zero
        # Demo.run cleaned up already; where it failed and the traceback's file, not just the message.
        print(f"demo failed: {error}\n  {demo.record_failure(error)}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from iflearner.controller import options_from_args, run_controller

    return run_controller(options_from_args(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iflearner-operator",
        description="Deploy federated learning jobs (IflearnerJob) as Pulumi stacks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    cluster = commands.add_parser("cluster", help="a real local control plane (etcd, kube-apiserver, kwok)")
    cluster.add_argument("cluster_command", choices=["up", "down", "status"])
    cluster.add_argument("--node", choices=["kwok", "real"], default="kwok",
                         help="kwok: simulated node (fast, default); real: containerd, kubelet and kube-proxy")
    cluster.add_argument("--slot", type=int, default=0,
                         help="real node only: 0 (default) runs in the host's network; 1-9 each in a network "
                              "namespace of its own (node address 10.214.<slot>.2), to run several clusters")
    cluster.add_argument("--data-dir", type=Path, default=None,
                         help="where the cluster keeps its state (default ~/.cache/iflearner-operator/local-cluster)")
    cluster.set_defaults(handler=_cluster)

    from iflearner.images.__main__ import add_arguments as add_image_arguments
    from iflearner.images.__main__ import run as run_images

    images = commands.add_parser("images", help="build the project's images, or push them to a registry")
    add_image_arguments(images)
    images.set_defaults(handler=run_images)

    preview = commands.add_parser("preview", help="show what a job's stack would change, changing nothing")
    preview.add_argument("file", type=Path, help="an IflearnerJob manifest (YAML)")
    preview.add_argument("--output", "-o", choices=["text", "json"], default="text")
    _add_connection_arguments(preview)
    preview.set_defaults(handler=_preview)

    from iflearner.controller.options import add_run_arguments

    run = commands.add_parser("run", help="run the controller (watch IflearnerJobs, reconcile their stacks)")
    add_run_arguments(run)
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="run a demo federation end to end on a local cluster")
    demo.add_argument("--keep", action="store_true", help="leave the cluster and jobs running to explore")
    demo.add_argument("--down", action="store_true", help="clean up a demo left running with --keep")
    demo.add_argument("--data-dir", type=Path, default=None, help="default ~/.cache/iflearner-operator/demo")
    demo.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the jobs to run")
    demo.add_argument("--node", choices=["auto", "real", "kwok"], default="auto",
                      help="real: real containers, the operator as a Pod and a federation that trains; "
                           "kwok: simulated Pods; auto (default): real where this machine can run it")
    demo.add_argument("--topology", choices=["one", "original"], default="one",
                      help="one: every job in one cluster (default, fast); original: the original README's "
                           "three clusters (server, party a, party b) with secure aggregation between the "
                           "parties (needs a real node)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))
