"""How many jobs' DNS records fit in the records ConfigMaps, by shard count.

The API server refuses a ConfigMap whose keys and values together exceed
1,048,576 bytes (``ValidateConfigMap``). Each job adds one zone file per host
it serves or names as a peer (``desired.zone_file``, keyed ``db.<host>``); its
key says which shard holds it (``desired.dns_shard_of``). This fills the
shards with realistic hosts, one record per job (a job's own host: peers'
records are shared between the jobs that name them), and prints the job count
at which the fullest shard would be refused. Pure computation: no cluster.

    .venv/bin/python bench/dns_capacity.py [--shards 1 8 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iflearner.desired import (  # noqa: E402
    BOOTSTRAP_DNS_RECORD_SHARDS,
    dns_shard_of,
    zone_file,
    zone_file_key,
)

CONFIGMAP_LIMIT = 1_048_576  # bytes of keys + values


def host(index: int) -> str:
    """Hosts shaped like the examples': job<N>.<federation>.party.iflearner.com."""
    return f"job{index}.federation-{index // 50:04d}.party.iflearner.com"


def capacity(shards: int, address: str = "172.31.164.53") -> tuple[int, float]:
    """(jobs that fit, bytes per record on average)."""
    sizes = [0] * shards
    total = 0
    index = 0
    while True:
        key = zone_file_key(host(index))
        size = len(key.encode()) + len(zone_file(host(index), address).encode())
        shard = dns_shard_of(key, shards)
        if sizes[shard] + size > CONFIGMAP_LIMIT:
            return index, total / max(index, 1)
        sizes[shard] += size
        total += size
        index += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, BOOTSTRAP_DNS_RECORD_SHARDS, 16])
    args = parser.parse_args()
    for shards in args.shards:
        jobs, per_record = capacity(shards)
        print(f"{shards:3d} shard(s): the fullest is refused at job {jobs + 1:,} "
              f"({per_record:.0f} bytes per record, limit {CONFIGMAP_LIMIT:,} bytes per ConfigMap)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
