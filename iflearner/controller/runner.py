"""The stack runner as the controller uses it: ``up`` with an optional refresh.

``iflearner.stackrunner.StackRunner.up`` does not refresh, so objects deleted
behind Pulumi's back would stay "same" in its state and never come back. Until
the runner takes a ``refresh`` argument itself, this subclass adds it; the
reconciler passes ``refresh=True`` only when the cluster may have drifted.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from iflearner.stackrunner import StackResult, StackRunner


def supports_refresh(runner: Any) -> bool:
    try:
        return "refresh" in inspect.signature(runner.up).parameters
    except (TypeError, ValueError):
        return False


class ControllerStackRunner(StackRunner):
    """StackRunner whose ``up`` can refresh the stack's state from the cluster first."""

    def up(self, stack_name: str, program: Callable[[], None], refresh: bool = False) -> StackResult:
        if not refresh:
            return super().up(stack_name, program)

        def action() -> StackResult:
            stack = self._stack(stack_name, program)
            up = self._with_recovery(
                stack, lambda: stack.up(color="never", suppress_progress=True, refresh=True))
            changes = {str(k): int(v) for k, v in (up.summary.resource_changes or {}).items()}
            outputs = {k: v.value for k, v in up.outputs.items() if not v.secret}
            return StackResult("up", stack_name, True, changes=changes, outputs=outputs)

        return self._run("up", stack_name, action)


def make_runner(settings: Any, foreign_locks_are_stale: bool) -> StackRunner:
    """The runner for the controller: the project's own when it refreshes, else the subclass."""
    parameters = inspect.signature(StackRunner.__init__).parameters
    kwargs = {"foreign_locks_are_stale": foreign_locks_are_stale} if "foreign_locks_are_stale" in parameters else {}
    cls = StackRunner if supports_refresh(StackRunner) else ControllerStackRunner
    return cls(settings, **kwargs)
