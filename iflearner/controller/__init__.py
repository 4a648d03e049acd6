"""The IflearnerJob controller: informers, a work queue, gated Pulumi runs, status, leader election.

``run_controller(ControllerOptions(...))`` runs it until SIGTERM; the flags of
``iflearner-operator run`` live in :mod:`iflearner.controller.options`.
"""

from __future__ import annotations

from typing import Any

from iflearner.controller.options import ControllerOptions, add_run_arguments, options_from_args

__all__ = ["ControllerOptions", "add_run_arguments", "options_from_args", "run_controller"]


def run_controller(options: ControllerOptions, runner: Any | None = None) -> int:
    """Run the controller until SIGTERM/SIGINT (0), a lost lease (1) or bad configuration (2)."""
    from iflearner.controller.manager import run_controller as run

    return run(options, runner=runner)
