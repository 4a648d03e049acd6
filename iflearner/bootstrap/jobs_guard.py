"""A resource that makes ``pulumi destroy`` of the bootstrap refuse while
IflearnerJobs exist.

Destroying the CRD and the operator under live jobs would orphan every job's
stack and objects: the CRD's deletion waits on the jobs' finalizers, which
only the (then deleted) operator removes. The guard depends on everything the
bootstrap declares, so the engine deletes it first; its delete lists the jobs
of every namespace and fails, naming them and saying what to do, before
anything else is touched. Deleting the jobs is the user's decision, never a
side effect of tearing down the cluster's wiring.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from iflearner.bootstrap.coredns import _api_client

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
SHOWN = 10


def refusal(jobs: list[str]) -> str | None:
    """Pure: the message that refuses the destroy, or None when no job exists."""
    if not jobs:
        return None
    shown = ", ".join(sorted(jobs)[:SHOWN]) + (f" and {len(jobs) - SHOWN} more" if len(jobs) > SHOWN else "")
    return (f"refusing to destroy the bootstrap while {len(jobs)} IflearnerJob(s) exist ({shown}): their stacks "
            "and objects would be orphaned. Delete them first and wait until they are gone (the operator "
            "destroys their stacks): kubectl delete iflearnerjobs --all --all-namespaces --wait; "
            "then run pulumi destroy again")


def _existing_jobs(kubeconfig: str | None) -> list[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = client.CustomObjectsApi(_api_client(kubeconfig))
    try:
        items = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    except ApiException as error:
        if error.status == 404:  # no CRD: no jobs
            return []
        raise
    return [f"{j['metadata']['namespace']}/{j['metadata']['name']}" for j in items]


class _JobsGuardProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="iflearnerjobs-guard", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=olds.get("kubeconfig") != news.get("kubeconfig"))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        message = refusal(_existing_jobs(props.get("kubeconfig")))
        if message:
            raise RuntimeError(message)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class JobsGuard(Resource):
    """Fails its own deletion while IflearnerJobs exist (declare it last, depending on everything)."""

    def __init__(self, name: str, *, kubeconfig: pulumi.Input[str] | None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(_JobsGuardProvider(), name,
                         {"kubeconfig": pulumi.Output.secret(kubeconfig) if kubeconfig else None}, opts)


class DeclaredResources:
    """Every resource the program declares after this is made (a stack
    transformation that changes nothing), so the guard can depend on all of
    them, children of YAML components included."""

    def __init__(self) -> None:
        self.resources: list[pulumi.Resource] = []
        pulumi.runtime.register_stack_transformation(self._collect)

    def _collect(self, args: pulumi.ResourceTransformationArgs) -> None:
        self.resources.append(args.resource)

    def guard(self, name: str, kubeconfig: str | None) -> JobsGuard:
        declared = list(self.resources)
        # YAML components (ConfigFile/ConfigGroup) are implemented by the
        # provider: their objects are known only through their `resources` output.
        components = [r for r in declared if isinstance(getattr(type(r), "resources", None), property)]
        children = pulumi.Output.all(*[c.resources for c in components])  # type: ignore[attr-defined]
        everything = children.apply(lambda lists: [
            *declared, *(r for found in lists for r in (found or []) if isinstance(r, pulumi.Resource))])
        return JobsGuard(name, kubeconfig=kubeconfig, opts=pulumi.ResourceOptions(depends_on=everything))
