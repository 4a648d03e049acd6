"""A real local Kubernetes control plane for the demo and the tests."""

from iflearner.localcluster.cluster import (
    ClusterAlreadyRunningError,
    ClusterError,
    ClusterState,
    LocalCluster,
    default_data_dir,
)

__all__ = [
    "ClusterAlreadyRunningError",
    "ClusterError",
    "ClusterState",
    "LocalCluster",
    "default_data_dir",
]
