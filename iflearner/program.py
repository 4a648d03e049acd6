"""The per-job Pulumi program: turns a ``DesiredResources`` description into
resources with pulumi-kubernetes. It decides nothing; every name, label and
field comes from :mod:`iflearner.desired`.

Ownership: every object carries ``pulumi.com/patchForce``: the job owns its
objects, so a field someone changed by hand (another server-side-apply
manager) is taken back on the next ``up`` instead of failing with a conflict
forever, and objects stay updatable when their field manager changes (a stack
recreated after its state was lost). Force is safe only because the
controller never lets an ``up`` start while one of the job's names is held
by an object the job does not own (``iflearner.controller.preflight``: the
``job-uid`` label every object here carries): the provider build in use
creates by upsert and would otherwise adopt, and later destroy, a user's own
object of the same name, with or without force.

Await behaviour: the Service and the route (Ingress, or Gateway and
GRPCRoute) carry ``pulumi.com/skipAwait``, the Pod an immediate
``pulumi.com/waitFor`` (its deletion is still awaited). A job's readiness
(the Pod's phase, the gateway's acceptance of its route) is what the
controller reads from the cluster; a stack that waited for it would hold a
Pulumi process open for the life of the job, fail on Pods that finish
(parties exit 0), and block on Ingress load-balancer status that some
clusters never set.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from iflearner.desired import ClusterSettings, DesiredResources

FORCE_OWNERSHIP = {"pulumi.com/patchForce": "true"}
WORKLOAD_ANNOTATIONS = {"pulumi.com/skipAwait": "true", **FORCE_OWNERSHIP}
# For the Pod, skipAwait would also skip waiting for its deletion, and a
# replacement under the same name would then race the terminating old Pod.
# waitFor on a field every Pod has ends the create/update await at once and
# leaves the delete await in place.
POD_ANNOTATIONS = {"pulumi.com/waitFor": "jsonpath={.metadata.uid}", **FORCE_OWNERSHIP}


def _annotated(manifest: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    manifest.setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)
    return manifest


def job_program(
    desired: DesiredResources, settings: ClusterSettings, kubeconfig: str | None, tls: Mapping[str, str]
) -> Callable[[], None]:
    """An inline Pulumi program declaring one job's resources.

    ``tls`` is the job's TLS Secret content (``tls.crt``, ``tls.key``) as the
    operator's signer chose it (:mod:`iflearner.controller.signer`): the
    stack never reads the CA, so neither its state nor its run ever holds the
    CA key. The job's own key is kept in the state as a secret.
    """

    def program() -> None:
        provider = k8s.Provider(
            "cluster",
            # The provider's schema does not mark it secret: an operator outside the cluster would
            # leave its (admin) kubeconfig readable in every job's state. Secret, it is encrypted.
            kubeconfig=pulumi.Output.secret(kubeconfig) if kubeconfig is not None else None,
            # Objects are named by the job, never auto-named by Pulumi.
            enable_server_side_apply=True,
        )
        opts = pulumi.ResourceOptions(provider=provider)
        names = desired.names

        tls_secret = k8s.core.v1.Secret(
            "tls-secret",
            metadata=_annotated(desired.tls_secret, FORCE_OWNERSHIP)["metadata"],
            type=desired.tls_secret["type"],
            string_data={"tls.crt": tls["tls.crt"], "tls.key": pulumi.Output.secret(tls["tls.key"])},
            opts=opts,
        )
        depends: list[pulumi.Resource] = [tls_secret]

        if desired.trust_configmap is not None:
            trust = k8s.core.v1.ConfigMap.get(
                "cluster-trust", f"{settings.operator_namespace}/{settings.trust_configmap_name}", opts=opts
            )
            depends.append(
                k8s.core.v1.ConfigMap(
                    "trust-configmap",
                    metadata=_annotated(desired.trust_configmap, FORCE_OWNERSHIP)["metadata"],
                    data=trust.data.apply(lambda d: {
                        "server-iflearner-secret.crt": d["server.crt"],
                        "party-iflearner-secret.crt": d["party.crt"],
                    }),
                    opts=opts,
                )
            )

        # Server-side apply with a field manager of each patch's own (the provider
        # makes one unique per Patch resource): each job owns only its keys of the
        # shared records ConfigMaps, so concurrent stacks never overwrite each
        # other, and destroy releases exactly this job's keys. (The
        # `pulumi.com/patchFieldManager` annotation would be applied to the shared
        # object too, and two jobs would conflict on it.) One patch per shard the
        # job's records hash to; shard 0 keeps the resource name records had
        # before shards, so existing stacks keep their records where they are.
        # patchForce: a key of this job's changed by hand belongs to whoever changed it; the repair
        # (controller/dnsrecords.py) takes it back instead of failing on the conflict. Every job
        # sets the same annotation value, which server-side apply lets managers share.
        for shard in desired.dns_shards:
            k8s.core.v1.ConfigMapPatch(
                "dns-records" if shard.index == 0 else f"dns-records-{shard.index}",
                metadata={"name": shard.configmap, "namespace": settings.dns_namespace,
                          "annotations": dict(FORCE_OWNERSHIP)},
                data=dict(shard.files),
                opts=opts,
            )

        k8s.yaml.v2.ConfigGroup(
            "workload",
            objs=[_annotated(m, WORKLOAD_ANNOTATIONS) for m in (desired.service, *desired.route_manifests)],
            opts=pulumi.ResourceOptions(provider=provider, depends_on=depends),
        )
        pod = _annotated(desired.pod, POD_ANNOTATIONS)
        k8s.core.v1.Pod(
            "pod",
            metadata=pod["metadata"],
            spec=pod["spec"],
            # A Pod's spec is immutable and its name is the job's: the old Pod
            # must go before the new one can be created under the same name.
            opts=pulumi.ResourceOptions(provider=provider, depends_on=depends, delete_before_replace=True),
        )
        pulumi.export("endpoint", desired.certificate.dns_names[0])
        pulumi.export("namespace", desired.pod["metadata"]["namespace"])
        pulumi.export("pod", names.pod)
        pulumi.export("service", names.service)
        pulumi.export("transport", desired.transport.value)
        pulumi.export("ingress", names.ingress if desired.ingress else None)
        pulumi.export("gateway", names.gateway if desired.gateway else None)
        pulumi.export("grpcRoute", names.route if desired.grpc_route else None)
        pulumi.export("tlsSecret", names.tls_secret)
        pulumi.export("trustConfigMap", names.trust_configmap if desired.trust_configmap else None)
        pulumi.export("certificate", tls["tls.crt"])

    return program
