"""``python -m iflearner.images build [NAME...]``: build (or find cached)
the project's images and print their references; ``make setup`` runs it so
that the slow part (debootstrap) happens before any test."""

from __future__ import annotations

import argparse
import sys
import time

from iflearner.images import project_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iflearner.images")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("names", nargs="*", help="images to build (default: all)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    images = project_images(progress=lambda msg: print(f"[images] {msg}", file=sys.stderr),
                            names=args.names or None)
    for name, image in images.items():
        print(f"{name}\t{image.reference}\t{image.archive}")
    print(f"[images] ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
