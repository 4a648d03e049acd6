"""Job programs with their certificate from the operator's own signer, for tests that run a job's
stack without the controller (the controller does the same in ``Reconciler._up``)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

from kubernetes import config

from iflearner.controller.kubeapi import KubeApi
from iflearner.controller.signer import Signer
from iflearner.desired import ClusterSettings, DesiredResources
from iflearner.program import job_program


def signed_program(desired: DesiredResources, settings: ClusterSettings, kubeconfig: Path) -> Callable[[], None]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        signer = Signer(KubeApi(api), settings.operator_namespace, settings.ca_secret_name)
        certificate = signer.certificate_for(desired.certificate, desired.pod["metadata"]["namespace"],
                                             desired.names.tls_secret, datetime.datetime.now(datetime.UTC))
    finally:
        api.close()
    return job_program(desired, settings, kubeconfig.read_text(), certificate.secret_data)
