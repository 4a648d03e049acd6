"""The metric per epoch as a PNG, from the parties' logs (their FL-* lines).

    python plot.py --out metrics.png party-a.log party-b.log
    kubectl logs iflearnerjob-client1 | python plot.py --out metrics.png -

Runs with the workload's packages (matplotlib is one of iflearner's imports
anyway), e.g. the cached workload venv or inside the workload image. For each
party: accuracy and loss after each epoch's local training (solid) and of the
aggregated model received at the end of each round (dashed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse(text: str) -> dict[str, dict[str, dict[int, float]]]:
    """party -> series name -> epoch -> value, from FL-EPOCH / FL-ROUND lines."""
    series: dict[str, dict[str, dict[int, float]]] = {}
    for line in text.splitlines():
        words = line.strip().split()
        if not words or words[0] not in ("FL-EPOCH", "FL-ROUND"):
            continue
        fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        party, epoch = fields.get("party", "?"), int(fields.get("epoch", "0"))
        prefix = "global_" if words[0] == "FL-ROUND" else ""
        for metric in ("accuracy", "loss"):
            if prefix + metric in fields:
                series.setdefault(party, {}).setdefault(prefix + metric, {})[epoch] = float(fields[prefix + metric])
    return series


def plot(series: dict[str, dict[str, dict[int, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display in a container or CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for index, (party, values) in enumerate(sorted(series.items())):
            color = f"C{index}"
            for name, style, label in ((metric, "-o", "after local epoch"), (f"global_{metric}", "--x", "aggregate")):
                points = sorted(values.get(name, {}).items())
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color,
                            label=f"{party}: {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot the parties' metric per epoch from their logs.")
    parser.add_argument("logs", nargs="+", help="party log files, or - for stdin")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--title", default="federated training: metric per epoch")
    args = parser.parse_args(argv)
    text = "\n".join(sys.stdin.read() if name == "-" else Path(name).read_text(errors="replace")
                     for name in args.logs)
    series = parse(text)
    if not series:
        print("no FL-EPOCH lines in the given logs; nothing to plot", file=sys.stderr)
        return 1
    plot(series, args.out, args.title)
    print(f"plot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
