"""Pulumi resources that wire CoreDNS for the federation and unwire it on
destroy: the operator's block in the Corefile, and the records volume in the
CoreDNS Deployment.

The Corefile is one string field that kubeadm (or the cluster's vendor) owns;
server-side apply can only own the whole field, and giving it up would delete
the Corefile. This resource edits the text instead: it inserts a marked block
(see :mod:`iflearner.bootstrap.corefile`) and removes exactly that block on
delete, so the Corefile after ``pulumi destroy`` equals the one before ``up``.
"""

from __future__ import annotations

from typing import Any

import pulumi
import yaml
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iflearner.bootstrap.corefile import add_block, remove_block


def _api_client(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    config.load_incluster_config()
    return client.ApiClient()


def _core_api(kubeconfig: str | None) -> Any:
    from kubernetes import client

    return client.CoreV1Api(_api_client(kubeconfig))


def _edit(props: dict[str, Any], change: Any) -> str:
    api = _core_api(props.get("kubeconfig"))
    configmap = api.read_namespaced_config_map(props["name"], props["namespace"])
    current = (configmap.data or {}).get(props["key"], "")
    updated = change(current)
    if updated != current:
        api.patch_namespaced_config_map(
            props["name"], props["namespace"], {"data": {props["key"]: updated}}
        )
    return updated


class _CorefileBlockProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        _edit(props, lambda text: add_block(text, props["block"]))
        return CreateResult(id_=f"{props['namespace']}/{props['name']}", outs=props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _edit(news, lambda text: add_block(text, news["block"]))
        return UpdateResult(outs=news)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("block", "kubeconfig") if olds.get(k) != news.get(k)]
        moved = [k for k in ("namespace", "name", "key") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed or moved), replaces=moved)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _edit(props, remove_block)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class CorefileBlock(Resource):
    """The operator's marked block inside a CoreDNS Corefile ConfigMap."""

    def __init__(
        self, name: str, *, block: pulumi.Input[str], kubeconfig: pulumi.Input[str] | None,
        namespace: str = "kube-system", configmap: str = "coredns", key: str = "Corefile",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            _CorefileBlockProvider(), name,
            {"block": block, "kubeconfig": pulumi.Output.secret(kubeconfig) if kubeconfig else None,
             "namespace": namespace, "name": configmap, "key": key},
            opts,
        )


def records_volumes(configmaps: list[str], volume: str, mount_path: str) -> list[tuple[str, str, str]]:
    """(volume name, ConfigMap, mount path) of each records shard: shard ``i`` at ``mount_path/i``
    (CoreDNS's ``auto`` plugin walks the directory recursively). Subdirectories, not one projected
    volume: a record moving between shards is briefly in two ConfigMaps, which a projected volume
    refuses as a path conflict and ``auto`` simply reads twice."""
    return [(volume if index == 0 else f"{volume}-{index}", name, f"{mount_path}/{index}")
            for index, name in enumerate(configmaps)]


def _is_records_volume(name: str, volume: str) -> bool:
    return name == volume or (name.startswith(f"{volume}-") and name.removeprefix(f"{volume}-").isdigit())


def _edit_deployment(props: dict[str, Any], add: bool) -> None:
    """Add or remove the records volumes and their mounts; other volumes stay as they are."""
    from kubernetes import client

    apps = client.AppsV1Api(_api_client(props.get("kubeconfig")))
    deployment = apps.read_namespaced_deployment(props["deployment"], props["namespace"])
    spec = deployment.spec.template.spec
    volume_name = props["volume"]
    spec.volumes = [v for v in spec.volumes or [] if not _is_records_volume(v.name, volume_name)]
    container = next((c for c in spec.containers if c.name == props["container"]), spec.containers[0])
    container.volume_mounts = [m for m in container.volume_mounts or []
                               if not _is_records_volume(m.name, volume_name)]
    if add:
        for name, configmap, path in records_volumes(list(props["configmaps"]), volume_name, props["mount_path"]):
            spec.volumes.append(client.V1Volume(name=name, config_map=client.V1ConfigMapVolumeSource(name=configmap)))
            container.volume_mounts.append(client.V1VolumeMount(name=name, mount_path=path, read_only=True))
    # Replace with the read resourceVersion: a concurrent change fails instead of being lost.
    apps.replace_namespaced_deployment(props["deployment"], props["namespace"], deployment)


class _RecordsVolumeProvider(ResourceProvider):
    _identity = ("namespace", "deployment", "container", "volume")

    def create(self, props: dict[str, Any]) -> CreateResult:
        _edit_deployment(props, add=True)
        return CreateResult(id_=f"{props['namespace']}/{props['deployment']}/{props['volume']}", outs=props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _edit_deployment(news, add=True)
        return UpdateResult(outs=news)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[k for k in changed if k in self._identity])

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _edit_deployment(props, add=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class RecordsVolume(Resource):
    """The job records ConfigMaps (one per shard) mounted read-only into the CoreDNS Deployment.

    A server-side-apply DeploymentPatch would do the same, but Pulumi diffs it
    against the whole live Deployment and reports an update on every preview;
    this resource changes only when its inputs do, and removes exactly its
    volume and mount on delete."""

    def __init__(
        self, name: str, *, configmaps: list[str], mount_path: str, kubeconfig: pulumi.Input[str] | None,
        namespace: str = "kube-system", deployment: str = "coredns", container: str = "coredns",
        volume: str = "iflearner-dns-records", opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            _RecordsVolumeProvider(), name,
            {"configmaps": configmaps, "mount_path": mount_path,
             "kubeconfig": pulumi.Output.secret(kubeconfig) if kubeconfig else None,
             "namespace": namespace, "deployment": deployment, "container": container, "volume": volume},
            opts,
        )
