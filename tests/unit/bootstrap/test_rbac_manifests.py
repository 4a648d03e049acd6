from __future__ import annotations

from iflearner.bootstrap.operator import OperatorConfig, cluster_role_rules, deployment, rbac
from iflearner.desired import ClusterSettings


def _all_rules():
    for obj in rbac(ClusterSettings()):
        yield from obj.get("rules", [])


def test_no_wildcards_anywhere():
    for rule in _all_rules():
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(key, []), rule


def test_job_rules_are_the_controllers_own_calls():
    """The controller patches (finalizer, status) and never creates, updates or deletes a job."""
    rules = {tuple(r["resources"]): r["verbs"] for r in cluster_role_rules()}
    assert rules[("iflearnerjobs/status",)] == ["patch"]
    assert rules[("iflearnerjobs",)] == ["get", "list", "watch", "patch"]
    assert ("iflearnerjobs/finalizers",) not in rules, "no ownerReferences are set"


def test_shared_objects_are_restricted_by_name():
    settings = ClusterSettings()
    named = [r for r in _all_rules() if r.get("resourceNames")]
    names = {n for r in named for n in r["resourceNames"]}
    assert {settings.ca_secret_name, settings.trust_configmap_name, settings.dns_configmap_name} <= names
    ca_rule = next(r for r in named if settings.ca_secret_name in r["resourceNames"])
    assert ca_rule["verbs"] == ["get", "list", "watch"]  # watched by name, never listed by namespace


def test_deployment_is_restricted_and_probed():
    objects = deployment(ClusterSettings(), OperatorConfig())
    deploy = next(o for o in objects if o["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = container["env"][0]
    assert env["name"] == "PULUMI_CONFIG_PASSPHRASE" and "secretKeyRef" in env["valueFrom"]
    assert any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    remote = deployment(ClusterSettings(), OperatorConfig(backend_url="s3://bucket/state"))
    assert not any(o["kind"] == "PersistentVolumeClaim" for o in remote)


def test_job_namespaces_bind_workload_rules_per_namespace_only():
    objects = rbac(ClusterSettings(), ("ml", "default"))
    assert not any(o["kind"] == "ClusterRoleBinding" for o in objects)
    bindings = [o for o in objects if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == "iflearner-operator-jobs"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["default", "ml"]
    args = next(o for o in deployment(ClusterSettings(), OperatorConfig(job_namespaces=("ml",)))
                if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args


def _container(config: OperatorConfig) -> dict:
    deploy = next(o for o in deployment(ClusterSettings(), config) if o["kind"] == "Deployment")
    return deploy["spec"]["template"]["spec"]["containers"][0]


def test_backend_credentials_come_from_a_secret_never_from_args():
    import pytest

    from iflearner.bootstrap.operator import OperatorConfigError

    with pytest.raises(OperatorConfigError, match="holds a credential.*password in the user info.*stateBackendSecret"):
        deployment(ClusterSettings(), OperatorConfig(backend_url="postgres://op:s3cret@db:5432/state"))
    # The password check of old missed credentials in the query string (issue 18).
    for url, part in (("postgres://op@db:5432/state?password=s3cret", "'password'"),
                      ("postgres://db/state?sslmode=verify-full&sslpassword=x", "'sslpassword'"),
                      ("azblob://container?sas_token=abc", "'sas_token'")):
        with pytest.raises(OperatorConfigError, match=f"holds a credential.*{part}"):
            deployment(ClusterSettings(), OperatorConfig(backend_url=url))
    # A user name, or a client key's path, is no secret.
    OperatorConfig(backend_url="postgres://iflearner@db/state?sslmode=verify-full&sslkey=/etc/pg/key").validate()
    container = _container(OperatorConfig(backend_secret="state-backend"))
    assert container["envFrom"] == [{"secretRef": {"name": "state-backend"}}]
    assert not any(a.startswith("--backend-url") for a in container["args"])
    objects = deployment(ClusterSettings(), OperatorConfig(backend_secret="state-backend"))
    assert not any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    s3 = _container(OperatorConfig(backend_url="s3://bucket/state?region=eu-west-1", backend_secret="aws-keys"))
    assert "--backend-url=s3://bucket/state?region=eu-west-1" in s3["args"]


def test_workload_identity_annotations_go_on_the_service_account():
    annotations = {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}
    account = next(o for o in rbac(ClusterSettings(), ("default",), annotations) if o["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}


def test_hot_standby_needs_a_shared_backend():
    import pytest

    from iflearner.bootstrap.operator import OperatorConfigError

    with pytest.raises(OperatorConfigError, match="hot standby needs a shared backend"):
        OperatorConfig(replicas=2).validate()
    with pytest.raises(OperatorConfigError, match="hot standby"):
        OperatorConfig(replicas=2, backend_url="file:///shared").validate()
    OperatorConfig(replicas=2, backend_url="s3://bucket/state").validate()
    OperatorConfig(replicas=2, backend_secret="postgres-url").validate()


def test_read_only_image_gets_writable_pulumi_home_and_work_dirs_on_tmp():
    container = _container(OperatorConfig())
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["IFLEARNER_PULUMI_HOME"].startswith("/tmp/") and env["IFLEARNER_STATE_DIR"].startswith("/tmp/")
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_destroy_refusal_names_the_jobs_and_what_to_do():
    from iflearner.bootstrap.jobs_guard import refusal

    assert refusal([]) is None
    text = refusal([f"ns/job-{i}" for i in range(12)])
    assert "12 IflearnerJob(s)" in text and "ns/job-0" in text and "and 2 more" in text
    assert "kubectl delete iflearnerjobs --all --all-namespaces" in text


def test_a_host_path_volume_is_bound_to_the_state_claim():
    objects = deployment(ClusterSettings(), OperatorConfig(state_host_path="/srv/iflearner-state"))
    volume = next(o for o in objects if o["kind"] == "PersistentVolume")
    claim = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    assert volume["spec"]["hostPath"]["path"] == "/srv/iflearner-state"
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert volume["spec"]["claimRef"] == {"namespace": "iflearner-system", "name": claim["metadata"]["name"]}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain", "stack state outlives the claim"


def test_a_kms_secrets_provider_is_an_argument_and_its_credentials_a_secret():
    import pytest

    from iflearner.bootstrap.operator import OperatorConfigError

    assert not any(a.startswith("--secrets-provider") for a in _container(OperatorConfig())["args"])
    url = "awskms://alias/iflearner-jobs?region=eu-west-1"
    container = _container(OperatorConfig(secrets_provider=url, secrets_provider_secret="kms-keys",
                                          backend_secret="state-backend"))
    assert f"--secrets-provider={url}" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "state-backend"}}, {"secretRef": {"name": "kms-keys"}}]
    with pytest.raises(OperatorConfigError, match="iflearner:secretsProvider: secrets provider 'kms://k'"):
        OperatorConfig(secrets_provider="kms://k").validate()
    with pytest.raises(OperatorConfigError, match="iflearner:secretsProviderSecret .* set iflearner:secretsProvider"):
        OperatorConfig(secrets_provider_secret="kms-keys").validate()
