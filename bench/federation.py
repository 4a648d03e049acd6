"""The whole deployment path's cost on a real federation (issue 12's figures), in one run.

    .venv/bin/python bench/federation.py [--data-dir /tmp/ifl-bench-fed]

1. ``demo --node real`` (what ``make demo`` runs where the machine can): a real-node cluster, the
   bootstrap's ``pulumi up``, the operator as a Pod, Traefik, examples/federation/ trained to the
   end. Timed from the command's start to the final metric; round time per epoch from the parties'
   logs (``FL-EPOCH ... cycle_s``).
2. The same trainer and server as plain local processes with TLS (``bench/federation_local.py``),
   same epochs and parties.

Prints both round times and their ratio (the overhead of gateway, Service, DNS and containers on
one epoch), plus the workload image's size. Needs root and the real node (``make setup``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import federation_local  # noqa: E402

from iflearner.images import ImageBuilder, project_spec  # noqa: E402
from iflearner.toolchain import REPO_ROOT  # noqa: E402

PARTIES = ("client1", "client2")


def round_times(logs: dict[str, str]) -> dict[int, float]:
    """Epoch -> its round's wall time (mean over the parties), from FL-EPOCH lines' cycle_s."""
    times: dict[int, list[float]] = {}
    for text in logs.values():
        for record in federation_local.parse_lines(text):
            if record["kind"] == "EPOCH" and "cycle_s" in record:
                times.setdefault(int(record["epoch"]) - 1, []).append(float(record["cycle_s"]))
    return {epoch: statistics.mean(values) for epoch, values in sorted(times.items())}


def run_demo(data_dir: Path) -> tuple[float, dict[int, float], str]:
    started = time.monotonic()
    # --keep: the command ends right after the final metric (stopping the cluster is not timed).
    result = subprocess.run([sys.executable, "-m", "iflearner", "demo", "--node", "real", "--keep",
                             "--data-dir", str(data_dir)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    final_at = time.monotonic() - started
    logs = {party: (data_dir / "federation" / f"iflearnerjob-{party}.log").read_text() for party in PARTIES}
    total = re.search(r"the federation trained \((\d+)s in all\)", result.stdout)
    return final_at, round_times(logs), total[1] if total else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="the demo's data dir (short: socket paths)")
    args = parser.parse_args()
    epochs = int(re.search(r"--epochs=(\d+)", (REPO_ROOT / "examples/federation/party-a.yaml").read_text())[1])
    builder = ImageBuilder(progress=lambda m: None)
    started = time.monotonic()
    workload = builder.build(project_spec("iflearner-workload", builder))
    image_s = time.monotonic() - started
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ifl-fed-", dir="/tmp"))
    try:
        demo_s, cluster_rounds, demo_total = run_demo(data_dir)
    finally:
        subprocess.run([sys.executable, "-m", "iflearner", "demo", "--down", "--node", "real",
                        "--data-dir", str(data_dir)], capture_output=True, check=False)
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    python = federation_local.workload_python(progress=lambda m: None)
    with tempfile.TemporaryDirectory(prefix="ifl-fed-local-") as workdir:
        certs = federation_local.write_certificates(Path(workdir) / "tls")
        local = federation_local.run_federation(python, Path(workdir), certs, epochs=epochs,
                                                parties=list(PARTIES), progress=lambda m: None)
        local_rounds = local.round_times()
    print(f"\nfederation: {len(PARTIES)} parties, {epochs} epochs")
    print(f"  workload image {workload.reference}: {workload.archive.stat().st_size / 2**20:.0f} MiB archive "
          f"(built or found in {image_s:.1f} s)")
    print(f"  demo --node real, start -> final metric: {demo_s:.1f} s (the demo's own count: {demo_total} s)")
    print("  (a round is bound by iflearner's one-second polling; bench/gateway.py measures the gRPC call itself)")
    print("  round time per epoch:   cluster (gateway, TLS, DNS, containers)   local processes (TLS)")
    for epoch in sorted(set(cluster_rounds) | set(local_rounds)):
        in_cluster, alone = cluster_rounds.get(epoch), local_rounds.get(epoch)
        print(f"    epoch {epoch}:             {in_cluster or float('nan'):8.3f} s"
              f"                            {alone or float('nan'):8.3f} s")
    if cluster_rounds and local_rounds:
        mean_cluster, mean_local = statistics.mean(cluster_rounds.values()), statistics.mean(local_rounds.values())
        print(f"  mean round: cluster {mean_cluster:.3f} s, local {mean_local:.3f} s, "
              f"ratio {mean_cluster / mean_local:.2f}x (overhead {mean_cluster - mean_local:+.3f} s per round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
