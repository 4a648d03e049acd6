"""iflearner-operator: runs IflearnerJob custom resources as Pulumi stacks.

Each job (a federated-learning aggregation server or party) becomes its own
Pulumi stack declaring the job's certificate, trust files, DNS records,
Ingress, Service and Pod.
"""

__version__ = "0.1.0"
