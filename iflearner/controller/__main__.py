"""``python -m iflearner.controller [flags]``: the same as ``iflearner-operator run``."""

from __future__ import annotations

import argparse
import sys

from iflearner.controller import add_run_arguments, options_from_args, run_controller


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iflearner-operator run",
                                     description="Run the IflearnerJob controller.")
    add_run_arguments(parser)
    return run_controller(options_from_args(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
