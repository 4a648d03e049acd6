"""The bootstrap's RBAC is enough for the controller and no wider, judged by the
real API server's authorizer after a real `pulumi up` of the bootstrap:

- with the default config (no `iflearner:jobNamespaces`: jobs in `default`),
  the operator's ServiceAccount can do what jobs need in `default` and cannot
  read a Secret anywhere else (kube-system, an unlisted namespace, its own
  namespace beyond the CA, cluster-wide), nor touch kube-system ConfigMaps but
  the DNS records one;
- the controller, run with that ServiceAccount's own token and the watch flags
  the bootstrap put in the Deployment, drives a job through the real Pulumi
  engine to Ready (DNS records written) and destroys it again;
- `jobNamespaces: ["*"]` (and only that) turns the job rules cluster-wide.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.bootstrap.operator import NAME as OPERATOR
from iflearner.desired import BOOTSTRAP_DNS_RECORD_SHARDS, ClusterSettings, dns_configmap_names
from iflearner.localcluster import LocalCluster
from iflearner.toolchain import REPO_ROOT

SETTINGS = ClusterSettings(dns_record_shards=BOOTSTRAP_DNS_RECORD_SHARDS)  # as the bootstrap configures it
DNS_CONFIGMAPS = dns_configmap_names(SETTINGS)
OPERATOR_NS = SETTINGS.operator_namespace
USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR}"
GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NS}", "system:authenticated"]
UNLISTED = "unlisted-team"
ADDRESS = "10.96.200.1"
# Server-side apply updates with PATCH (and creating with it needs `create`): the stacks never send update.
JOB_VERBS = ("get", "list", "watch", "create", "patch", "delete")
# What every authenticated user may do (system:basic-user and friends): asking about itself.
SELF_REVIEW_GROUPS = {"authorization.k8s.io", "authentication.k8s.io"}


def service_account_kubeconfig(admin: client.ApiClient, admin_kubeconfig: Path, path: Path) -> Path:
    """A kubeconfig holding a TokenRequest token of the operator's ServiceAccount, as its Pod would."""
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(
        OPERATOR, OPERATOR_NS,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    ).status.token
    cluster = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": OPERATOR, "user": {"token": token}}],
        "contexts": [{"name": OPERATOR, "context": {"cluster": cluster["name"], "user": OPERATOR}}],
        "current-context": OPERATOR,
    }))
    return path


def allowed(admin: client.ApiClient, verb: str, resource: str, namespace: str = "", group: str = "",
            name: str = "", subresource: str = "") -> bool:
    """The API server's verdict for the operator's ServiceAccount (a SubjectAccessReview)."""
    review = client.AuthorizationV1Api(admin).create_subject_access_review(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user=USER, groups=GROUPS, resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=resource, namespace=namespace or None, group=group, name=name or None,
            subresource=subresource or None))))
    return bool(review.status.allowed)


def rules_in(operator: client.ApiClient, namespace: str) -> list[client.V1ResourceRule]:
    """Every rule the ServiceAccount holds in a namespace, as the authorizer lists them (its own view)."""
    review = client.AuthorizationV1Api(operator).create_self_subject_rules_review(
        client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)))
    assert not review.status.incomplete, review.status.evaluation_error
    return list(review.status.resource_rules)


def covering(rules: list[client.V1ResourceRule], resource: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(verbs, resourceNames) of the core-group rules that reach ``resource``."""
    return sorted((tuple(sorted(r.verbs)), tuple(sorted(r.resource_names or ())))
                  for r in rules if set(r.api_groups or ()) & {"", "*"} and set(r.resources or ()) & {resource, "*"})


def check_least_privilege(admin: client.ApiClient, operator: client.ApiClient) -> None:
    # What jobs need, in the listed namespace.
    for verb in JOB_VERBS:
        for resource in ("secrets", "configmaps", "services", "pods"):
            assert allowed(admin, verb, resource, "default"), (verb, resource)
        assert allowed(admin, verb, "ingresses", "default", "networking.k8s.io"), verb
        for resource in ("gateways", "grpcroutes"):
            assert allowed(admin, verb, resource, "default", "gateway.networking.k8s.io"), (verb, resource)
    for verb in ("get", "list", "watch", "patch"):
        assert allowed(admin, verb, "iflearnerjobs", "default", "git.iflytek.com"), verb
    assert allowed(admin, "patch", "iflearnerjobs", "default", "git.iflytek.com", subresource="status")
    for verb in ("create", "list", "watch"):
        assert allowed(admin, verb, "events", "default"), verb
    assert not allowed(admin, "list", "events", SETTINGS.dns_namespace)
    # The named objects elsewhere, and nothing next to them.
    assert allowed(admin, "get", "secrets", OPERATOR_NS, name=SETTINGS.ca_secret_name)
    assert allowed(admin, "get", "configmaps", OPERATOR_NS, name=SETTINGS.trust_configmap_name)
    assert allowed(admin, "get", "configmaps", SETTINGS.dns_namespace, name=SETTINGS.dns_configmap_name)
    assert allowed(admin, "patch", "configmaps", SETTINGS.dns_namespace, name=SETTINGS.dns_configmap_name)
    assert allowed(admin, "update", "leases", OPERATOR_NS, "coordination.k8s.io", name="iflearner-operator-leader")

    # Secrets it does not need: nowhere else, in no way.
    for verb in ("get", "list", "watch"):
        assert not allowed(admin, verb, "secrets"), f"{verb} secrets cluster-wide"
        assert not allowed(admin, verb, "configmaps"), f"{verb} configmaps cluster-wide"
        for namespace in (SETTINGS.dns_namespace, UNLISTED):
            assert not allowed(admin, verb, "secrets", namespace), (verb, namespace)
    assert not allowed(admin, "list", "secrets", OPERATOR_NS)
    assert not allowed(admin, "get", "secrets", OPERATOR_NS, name="iflearner-operator-state")
    assert not allowed(admin, "update", "secrets", OPERATOR_NS, name=SETTINGS.ca_secret_name)
    for verb in ("get", "list", "create", "update", "patch", "delete"):
        assert not allowed(admin, verb, "configmaps", SETTINGS.dns_namespace, name="coredns"), verb
    assert not allowed(admin, "delete", "configmaps", SETTINGS.dns_namespace, name=SETTINGS.dns_configmap_name)
    for verb in ("create", "patch", "delete"):
        assert not allowed(admin, verb, "pods", UNLISTED), verb
    assert not allowed(admin, "update", "secrets", "default"), "not a call the operator makes"
    assert not allowed(admin, "list", "iflearnerjobs", group="git.iflytek.com"), "cluster-wide job list"
    assert not allowed(admin, "list", "pods"), "cluster-wide pod list"

    # The authorizer's full list, namespace by namespace, from the operator's own token:
    # Secrets only in the job namespace and the CA by name; nothing at all in other namespaces.
    namespaces = [n.metadata.name for n in client.CoreV1Api(admin).list_namespace().items]
    assert {"default", UNLISTED, OPERATOR_NS, SETTINGS.dns_namespace} <= set(namespaces)
    for namespace in namespaces:
        rules = rules_in(operator, namespace)
        secrets = covering(rules, "secrets")
        if namespace == "default":
            assert secrets == [(tuple(sorted(JOB_VERBS)), ())], secrets
        elif namespace == OPERATOR_NS:
            assert secrets == [(("get", "list", "watch"), (SETTINGS.ca_secret_name,))], secrets
        elif namespace == SETTINGS.dns_namespace:
            assert secrets == [] and covering(rules, "configmaps") == [
                (("get", "list", "patch", "watch"), tuple(sorted(DNS_CONFIGMAPS)))], rules
        else:
            assert {g for r in rules for g in r.api_groups or ()} <= SELF_REVIEW_GROUPS, (namespace, rules)

    # And the API itself refuses the operator's own token.
    core = client.CoreV1Api(operator)
    refused = [
        lambda: core.list_secret_for_all_namespaces(),
        lambda: core.list_namespaced_secret(SETTINGS.dns_namespace),
        lambda: core.list_namespaced_secret(UNLISTED),
        lambda: core.read_namespaced_secret("team-credentials", UNLISTED),
        lambda: core.read_namespaced_secret("iflearner-operator-state", OPERATOR_NS),
        lambda: core.list_namespaced_config_map(SETTINGS.dns_namespace),
        lambda: core.read_namespaced_config_map("coredns", SETTINGS.dns_namespace),
        lambda: core.list_node(),
        lambda: core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="not-allowed"))),
        lambda: client.AppsV1Api(operator).delete_namespaced_deployment("coredns", SETTINGS.dns_namespace),
        lambda: client.CustomObjectsApi(operator).create_namespaced_custom_object(
            "git.iflytek.com", "v1", "default", "iflearnerjobs", {"apiVersion": "git.iflytek.com/v1",
            "kind": "IflearnerJob", "metadata": {"name": "x"}, "spec": {}}),
        lambda: client.RbacAuthorizationV1Api(operator).create_cluster_role_binding(client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name="escalate"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                      name="cluster-admin"))),
    ]
    for action in refused:
        with pytest.raises(ApiException) as denied:
            action()
        assert denied.value.status == 403
    assert core.read_namespaced_secret(SETTINGS.ca_secret_name, OPERATOR_NS).data["tls.crt"]


def audited_calls(audit_log: Path, after: int) -> list[dict[str, Any]]:
    """The operator's requests the API server recorded after byte ``after`` of its audit log."""
    with audit_log.open("rb") as log:
        log.seek(after)
        events = [json.loads(line) for line in log if line.strip()]
    return [e for e in events if e["user"]["username"] == USER]


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef")
    if not ref:
        return f"{event['verb']} {event['requestURI'].split('?')[0]}"
    resource = "/".join(p for p in (ref.get("apiGroup"), ref["resource"], ref.get("subresource")) if p)
    where = ref.get("namespace") or "(cluster)"
    name = ref.get("name") if where != "default" else None  # outside the job namespace, every name matters
    return f"{event['verb']} {resource} in {where}" + (f" name={name}" if name else "")


def check_every_call_was_allowed_and_named(calls: list[dict[str, Any]]) -> None:
    """Every request of the controller and its stacks was allowed but one refused on
    purpose, and outside the job namespace each touched only the objects named in the RBAC."""
    assert calls, "the audit log recorded the operator's requests"
    refused = [e for e in calls if e["responseStatus"].get("code") in (401, 403)]
    # The provider's optional watch of kube-system's Events while it awaits the
    # records patch (it only reports warnings from them): refused by design.
    tolerated = {f"{verb} events in {SETTINGS.dns_namespace}" for verb in ("list", "watch")}
    assert {describe(e) for e in refused} <= tolerated, sorted({describe(e) for e in refused})
    assert all(e.get("userAgent", "").startswith("pulumi-kubernetes/") for e in refused), refused
    outside = {(ref.get("namespace"), ref["resource"], ref.get("name")) for e in calls
               if (ref := e.get("objectRef")) and ref.get("namespace") != "default" and e not in refused}
    named = {(OPERATOR_NS, "secrets", SETTINGS.ca_secret_name), (OPERATOR_NS, "configmaps",
             SETTINGS.trust_configmap_name), (OPERATOR_NS, "leases", "iflearner-operator-leader"),
             (OPERATOR_NS, "leases", None), *((SETTINGS.dns_namespace, "configmaps", name) for name in DNS_CONFIGMAPS)}
    assert outside <= named, sorted(outside - named, key=str)
    print("the operator's calls (refused: " + ", ".join(sorted({describe(e) for e in refused})) + "):\n  "
          + "\n  ".join(sorted({describe(e) for e in calls})))


def deployment_args(admin: client.ApiClient) -> list[str]:
    deploy = client.AppsV1Api(admin).read_namespaced_deployment(OPERATOR, OPERATOR_NS)
    return list(deploy.spec.template.spec.containers[0].args)


def wait_job(jobs: client.CustomObjectsApi, name: str, done: Any, controller: subprocess.Popen[bytes],
             log: Path, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        try:
            job = jobs.get_namespaced_custom_object("git.iflytek.com", "v1", "default", "iflearnerjobs", name)
        except ApiException as error:
            if error.status != 404:
                raise
            job = None
        if done(job):
            return job or {}
        assert controller.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    raise AssertionError(f"timed out: {(job or {}).get('status')}\n{log.read_text()[-3000:]}")


def is_ready(job: dict[str, Any] | None) -> bool:
    status = (job or {}).get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    return ready.get("status") == "True" and status.get("phase") == "Running"


def test_default_rbac_is_confined_to_the_job_namespaces_and_enough_for_the_controller(tmp_path):
    cluster = LocalCluster(tmp_path / "cluster", audit_users=(USER,))
    state = cluster.up(progress=print)
    controller = None
    try:
        # The default: no iflearner:jobNamespaces (jobs in `default`); the gateway (Gateway API) installed.
        config_file = tmp_path / "Pulumi.rbac.yaml"
        config_file.write_text(yaml.safe_dump({"config": {
            "iflearner:clusterRole": "all", "iflearner:operatorReplicas": 0, "iflearner:ingressAddress": ADDRESS,
            "iflearner:gatewayClusterIP": ADDRESS, "iflearner:gatewayImage": "iflearner.local/traefik:test"}}))
        project = BootstrapProject("rbac", state.kubeconfig, tmp_path / "bootstrap", "rbac-test", config_file)
        started = time.monotonic()
        project.up()
        print(f"bootstrap up: {time.monotonic() - started:.1f}s")
        admin = config.new_client_from_config(config_file=str(state.kubeconfig))
        core = client.CoreV1Api(admin)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=UNLISTED)))
        core.create_namespaced_secret(UNLISTED, client.V1Secret(
            metadata=client.V1ObjectMeta(name="team-credentials"), string_data={"password": "not yours"}))
        kubeconfig = service_account_kubeconfig(admin, state.kubeconfig, tmp_path / "operator.kubeconfig")
        operator = config.new_client_from_config(config_file=str(kubeconfig))
        check_least_privilege(admin, operator)
        audit_mark = cluster.audit_log.stat().st_size  # the refusals above are the test's, not the operator's

        # The controller as the Deployment would run it: the watch flags the bootstrap wrote, the SA's token.
        watch = [a for a in deployment_args(admin) if a.startswith("--namespace")]
        assert watch == ["--namespace=default"]
        passphrase = tmp_path / "passphrase"
        passphrase.write_text("rbac-test-jobs")
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        log_path = tmp_path / "controller.log"
        log = log_path.open("wb")
        controller = subprocess.Popen(
            [sys.executable, "-m", "iflearner", "run", "--kubeconfig", str(kubeconfig),
             "--state-dir", str(tmp_path / "jobs"), "--passphrase-file", str(passphrase),
             "--metrics-address", "127.0.0.1:0", "--leader-elect", "--ingress-address", ADDRESS,
             "--dns-record-shards", str(SETTINGS.dns_record_shards), *watch],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        jobs = client.CustomObjectsApi(admin)
        manifest = yaml.safe_load((REPO_ROOT / "examples" / "party-a.yaml").read_text())
        name = manifest["metadata"]["name"]
        jobs.create_namespaced_custom_object("git.iflytek.com", "v1", "default", "iflearnerjobs", manifest)
        started = time.monotonic()
        wait_job(jobs, name, is_ready, controller, log_path)
        print(f"job Ready under the operator's RBAC: {time.monotonic() - started:.1f}s")
        pod = core.read_namespaced_pod(name, "default")
        assert {v.name for v in pod.spec.volumes} >= {"server-iflearner-crt", "party-iflearner-crt"}
        lease = client.CoordinationV1Api(admin).read_namespaced_lease("iflearner-operator-leader", OPERATOR_NS)
        assert lease.spec.holder_identity
        secret = core.read_namespaced_secret(f"{name}-tls", "default")
        assert base64.b64decode(secret.data["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
        records = [core.read_namespaced_config_map(n, SETTINGS.dns_namespace).data for n in DNS_CONFIGMAPS]
        assert any(records), "the job stack wrote its DNS records through the by-name grants"

        # A job on the gateway transport: its stack makes a Gateway and a GRPCRoute. (On the simulated
        # node no gateway accepts a route, so the job stays not Ready: the stack's success is the point.)
        routed = copy.deepcopy(manifest)
        routed["metadata"]["name"] = "rbac-gateway"
        routed["spec"].update(host="rbac-gateway.a.party.iflearner.com", transport="gateway")
        jobs.create_namespaced_custom_object("git.iflytek.com", "v1", "default", "iflearnerjobs", routed)
        wait_job(jobs, "rbac-gateway", lambda job: ((job or {}).get("status") or {}).get(
            "lastOperation", {}).get("result") == "Succeeded", controller, log_path)
        for plural in ("gateways", "grpcroutes"):
            assert jobs.list_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default", plural)["items"]

        # Destroying the stacks needs no more than creating them did.
        for job_name in (name, "rbac-gateway"):
            jobs.delete_namespaced_custom_object("git.iflytek.com", "v1", "default", "iflearnerjobs", job_name)
        for job_name in (name, "rbac-gateway"):
            wait_job(jobs, job_name, lambda job: job is None, controller, log_path, timeout=180)
        for plural in ("gateways", "grpcroutes"):
            assert not jobs.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", "default", plural)["items"]
        assert not any(core.read_namespaced_config_map(n, SETTINGS.dns_namespace).data for n in DNS_CONFIGMAPS)
        assert "forbidden" not in log_path.read_text().lower(), log_path.read_text()[-3000:]
        os.killpg(controller.pid, signal.SIGTERM)
        controller.wait(60)
        controller = None
        check_every_call_was_allowed_and_named(audited_calls(cluster.audit_log, audit_mark))

        # Cluster-wide only when the config says so.
        stack_file = project.project_dir / "stacks" / "Pulumi.rbac.yaml"
        wide = yaml.safe_load(stack_file.read_text())
        wide["config"]["iflearner:jobNamespaces"] = ["*"]
        stack_file.write_text(yaml.safe_dump(wide))
        project.up()
        assert allowed(admin, "list", "secrets") and allowed(admin, "get", "secrets", UNLISTED)
        assert not [a for a in deployment_args(admin) if a.startswith("--namespace")]
        # ... and back: the cluster-wide grant is gone again.
        wide["config"]["iflearner:jobNamespaces"] = ["default", UNLISTED]
        stack_file.write_text(yaml.safe_dump(wide))
        project.up()
        assert not allowed(admin, "list", "secrets") and not allowed(admin, "get", "secrets", SETTINGS.dns_namespace)
        assert allowed(admin, "get", "secrets", UNLISTED) and allowed(admin, "create", "pods", "default")
        assert [a for a in deployment_args(admin) if a.startswith("--namespace")] == [
            "--namespace=default", f"--namespace={UNLISTED}"]
        # A list that cannot be meant stops `up` with what to fix, before anything changes.
        for bad, message in (([], "jobNamespaces is empty"), (["Team_A"], "'Team_A' is not a namespace name"),
                             (["kube-system"], "lists kube-system")):
            wide["config"]["iflearner:jobNamespaces"] = bad
            stack_file.write_text(yaml.safe_dump(wide))
            with pytest.raises(RuntimeError, match=message):
                project.up()
        assert allowed(admin, "get", "secrets", UNLISTED) and not allowed(admin, "get", "secrets", "kube-system")
    finally:
        if controller is not None:
            os.killpg(controller.pid, signal.SIGTERM)
            controller.wait(60)
        cluster.down()
