"""A Pulumi resource that adds the operator's block to CoreDNS's Corefile and
takes it out again on destroy.

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


def _core_api(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        return client.CoreV1Api(config.new_client_from_config_dict(yaml.safe_load(kubeconfig)))
    config.load_incluster_config()
    return client.CoreV1Api()


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
