"""The bootstrap's RBAC is enough for the controller and no wider: after
`pulumi up`, the controller runs with the operator ServiceAccount's own token
and reconciles a job to Ready, while actions outside its role are refused."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.bootstrap.operator import NAME as OPERATOR
from iflearner.localcluster import LocalCluster
from iflearner.toolchain import REPO_ROOT


def service_account_kubeconfig(admin: client.ApiClient, admin_kubeconfig: Path, path: Path) -> Path:
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(
        OPERATOR, "iflearner-system",
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


def test_controller_reconciles_with_the_service_accounts_own_permissions(tmp_path):
    cluster = LocalCluster(tmp_path / "cluster")
    state = cluster.up(progress=print)
    controller = None
    try:
        config_file = tmp_path / "Pulumi.rbac.yaml"
        config_file.write_text(yaml.safe_dump({"config": {
            "iflearner:clusterRole": "all", "iflearner:operatorReplicas": 0,
            "iflearner:installIngressNginx": False, "iflearner:jobNamespaces": ["default"]}}))
        project = BootstrapProject("rbac", state.kubeconfig, tmp_path / "bootstrap", "rbac-test", config_file)
        project.up()
        admin = config.new_client_from_config(config_file=str(state.kubeconfig))
        kubeconfig = service_account_kubeconfig(admin, state.kubeconfig, tmp_path / "operator.kubeconfig")
        operator = config.new_client_from_config(config_file=str(kubeconfig))

        # Refused: everything the operator has no business doing.
        refused = [
            lambda: client.CoreV1Api(operator).list_node(),
            lambda: client.CoreV1Api(operator).create_namespace(client.V1Namespace(
                metadata=client.V1ObjectMeta(name="not-allowed"))),
            lambda: client.AppsV1Api(operator).delete_namespaced_deployment("coredns", "kube-system"),
            lambda: client.CustomObjectsApi(operator).create_namespaced_custom_object(
                "git.iflytek.com", "v1", "default", "iflearnerjobs", {"apiVersion": "git.iflytek.com/v1",
                "kind": "IflearnerJob", "metadata": {"name": "x"}, "spec": {}}),
            lambda: client.RbacAuthorizationV1Api(operator).create_cluster_role_binding(client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name="escalate"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                          name="cluster-admin"))),
            # Secrets outside the job namespaces, even the operator's own.
            lambda: client.CoreV1Api(operator).read_namespaced_secret("iflearner-operator-state", "iflearner-system"),
            lambda: client.CoreV1Api(operator).list_namespaced_secret("kube-system"),
        ]
        for action in refused:
            with pytest.raises(ApiException) as denied:
                action()
            assert denied.value.status == 403

        passphrase = tmp_path / "passphrase"
        passphrase.write_text("rbac-test-jobs")
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        log = (tmp_path / "controller.log").open("wb")
        controller = subprocess.Popen(
            [sys.executable, "-m", "iflearner", "run", "--kubeconfig", str(kubeconfig),
             "--state-dir", str(tmp_path / "jobs"), "--passphrase-file", str(passphrase),
             "--metrics-address", "127.0.0.1:0", "--leader-elect", "--ingress-address", "10.96.200.1",
             "--namespace", "default"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        jobs = client.CustomObjectsApi(admin)
        jobs.create_namespaced_custom_object("git.iflytek.com", "v1", "default", "iflearnerjobs",
                                             yaml.safe_load((REPO_ROOT / "examples" / "party-a.yaml").read_text()))
        deadline = time.monotonic() + 180
        status: dict = {}
        while time.monotonic() < deadline:
            status = jobs.get_namespaced_custom_object(
                "git.iflytek.com", "v1", "default", "iflearnerjobs", "iflearnerjob-client1").get("status") or {}
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            if ready.get("status") == "True" and status.get("phase") == "Running":
                break
            assert controller.poll() is None, (tmp_path / "controller.log").read_text()[-3000:]
            time.sleep(1)
        else:
            raise AssertionError(f"not Ready: {status}\n{(tmp_path / 'controller.log').read_text()[-3000:]}")
        pod = client.CoreV1Api(admin).read_namespaced_pod("iflearnerjob-client1", "default")
        assert {v.name for v in pod.spec.volumes} >= {"server-iflearner-crt", "party-iflearner-crt"}
        lease = client.CoordinationV1Api(admin).read_namespaced_lease("iflearner-operator-leader", "iflearner-system")
        assert lease.spec.holder_identity
        secret = client.CoreV1Api(admin).read_namespaced_secret("iflearnerjob-client1-tls", "default")
        assert base64.b64decode(secret.data["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    finally:
        if controller is not None:
            os.killpg(controller.pid, signal.SIGTERM)
            controller.wait(60)
        cluster.down()
