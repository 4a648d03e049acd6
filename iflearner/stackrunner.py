"""One Pulumi stack per job, run through the Automation API.

The runner knows about backends, passphrases and the offline toolchain; it
knows nothing about jobs beyond a stack name and an inline program. Every
operation returns a ``StackResult`` instead of raising, so callers (the CLI,
the controller) report failures without parsing exceptions.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from iflearner import toolchain

PROJECT_NAME = "iflearner-jobs"
PASSPHRASE_ENV = "PULUMI_CONFIG_PASSPHRASE"


@dataclass(frozen=True)
class RunnerSettings:
    """Where stacks keep their state and how their secrets are encrypted."""

    backend_url: str
    passphrase: str
    work_dir: Path

    @classmethod
    def local(cls, state_dir: Path, passphrase: str) -> RunnerSettings:
        """A ``file://`` backend under ``state_dir`` (the embedded default)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        work_dir = state_dir / "workspace"
        work_dir.mkdir(exist_ok=True)
        return cls(f"file://{(state_dir / 'state').resolve()}", passphrase, work_dir)


@dataclass
class StackResult:
    """What one stack operation did, in a form that is safe to log and store."""

    operation: str
    stack: str
    succeeded: bool
    changes: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return any(count for op, count in self.changes.items() if op != "same")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def summarize_error(error: BaseException) -> str:
    """The lines of a Pulumi failure that say what went wrong, without noise."""
    text = _ANSI.sub("", str(error))
    stderr = getattr(error, "stderr", "") or ""
    lines = [line.strip() for line in (stderr or text).splitlines()]
    wanted = [
        line for line in lines
        if line and ("error" in line.lower() or "failed" in line.lower()) and "code: " not in line
    ]
    return "; ".join(dict.fromkeys(wanted))[:2000] or text.strip()[:2000]


class StackRunner:
    """Preview, up and destroy of inline-program stacks in one workspace."""

    def __init__(self, settings: RunnerSettings) -> None:
        self.settings = settings
        env = toolchain.pulumi_env()
        env[PASSPHRASE_ENV] = settings.passphrase
        env["PULUMI_BACKEND_URL"] = settings.backend_url
        self._env = env
        self._command = auto.PulumiCommand(root=str(toolchain.tools_dir()))

    def _stack(self, stack_name: str, program: Callable[[], None]) -> auto.Stack:
        return auto.create_or_select_stack(
            stack_name=stack_name, project_name=PROJECT_NAME, program=program, opts=self._workspace_options()
        )

    def _run(self, operation: str, stack_name: str, action: Callable[[], StackResult]) -> StackResult:
        started = time.monotonic()
        try:
            result = action()
        except Exception as error:  # noqa: BLE001 - reported, never raised
            result = StackResult(operation, stack_name, False, error=summarize_error(error))
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def preview(self, stack_name: str, program: Callable[[], None]) -> StackResult:
        def action() -> StackResult:
            existed = self._exists(stack_name)
            stack = self._stack(stack_name, program)
            steps: list[dict[str, str]] = []

            def on_event(event: auto.EngineEvent) -> None:
                pre = event.resource_pre_event
                if pre is not None and pre.metadata.op != auto.OpType.SAME:
                    steps.append({"op": str(pre.metadata.op.value), "type": pre.metadata.type,
                                  "urn": pre.metadata.urn})

            try:
                preview = stack.preview(on_event=on_event, color="never", suppress_progress=True)
            finally:
                if not existed:
                    # A preview of a job that was never applied leaves no stack behind.
                    stack.workspace.remove_stack(stack_name)
            changes = {str(getattr(k, "value", k)): int(v) for k, v in preview.change_summary.items()}
            return StackResult("preview", stack_name, True, changes=changes, steps=steps)

        return self._run("preview", stack_name, action)

    def up(self, stack_name: str, program: Callable[[], None]) -> StackResult:
        def action() -> StackResult:
            stack = self._stack(stack_name, program)
            up = stack.up(color="never", suppress_progress=True)
            changes = {str(k): int(v) for k, v in (up.summary.resource_changes or {}).items()}
            outputs = {k: v.value for k, v in up.outputs.items() if not v.secret}
            return StackResult("up", stack_name, True, changes=changes, outputs=outputs)

        return self._run("up", stack_name, action)

    def destroy(self, stack_name: str, program: Callable[[], None] | None = None) -> StackResult:
        """Destroy the stack's resources, then remove the stack itself."""

        def action() -> StackResult:
            try:
                stack = auto.select_stack(
                    stack_name=stack_name, project_name=PROJECT_NAME,
                    program=program or (lambda: None), opts=self._workspace_options(),
                )
            except auto.StackNotFoundError:
                return StackResult("destroy", stack_name, True, changes={})
            destroyed = stack.destroy(color="never", suppress_progress=True)
            stack.workspace.remove_stack(stack_name)
            changes = {str(k): int(v) for k, v in (destroyed.summary.resource_changes or {}).items()}
            return StackResult("destroy", stack_name, True, changes=changes)

        return self._run("destroy", stack_name, action)

    def _exists(self, stack_name: str) -> bool:
        workspace = auto.LocalWorkspace(**vars(self._workspace_options()))
        return any(summary.name == stack_name for summary in workspace.list_stacks())

    def _workspace_options(self) -> auto.LocalWorkspaceOptions:
        return auto.LocalWorkspaceOptions(
            work_dir=str(self.settings.work_dir),
            pulumi_home=str(toolchain.pulumi_home()),
            env_vars=self._env,
            pulumi_command=self._command,
            secrets_provider="passphrase",
            project_settings=auto.ProjectSettings(
                name=PROJECT_NAME, runtime="python",
                backend=auto.ProjectBackend(url=self.settings.backend_url),
            ),
        )


def default_passphrase() -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise RuntimeError(
            f"set {PASSPHRASE_ENV} (or --passphrase-file) so that stack secrets are encrypted"
        )
    return value
