"""One Pulumi stack per job, run through the Automation API.

The runner knows about backends, passphrases and the offline toolchain; it
knows nothing about jobs beyond a stack name and an inline program. Every
operation returns a ``StackResult`` instead of raising, so callers (the CLI,
the controller) report failures without parsing exceptions -- except after
fencing (:class:`~iflearner.pulumiruns.FencedError`): a replica that lost the
leader lease must not report anything any more.

Runs have a deadline (``run_timeout``): a run that exceeds it is stopped
(its whole process tree, see :mod:`iflearner.pulumiruns`) and reported as
such. A stack lock is removed only when every holder is proven dead (see
:mod:`iflearner.stacklocks`); otherwise the operation fails with the
holders named, and the caller retries later.

``up`` and ``destroy`` are lean: the Automation API's ``Stack.up`` starts four
CLI processes per update (``stack select`` before; ``stack output`` twice and
``stack history`` after), which is about 1 s of a 2.3 s update on the local
control plane. Here a stack is created or selected once and kept; each update
is one ``pulumi up`` with the inline program served in-process (as
``Stack.up`` does) and its change summary read from the engine's event log.
Every stack has a work directory of its own: the Automation API rewrites
``Pulumi.yaml`` whenever it opens a workspace, and parallel stacks sharing a
directory would read a half-written file.

Work directories hold nothing the state backend does not also hold. They are
keyed by the backend URL (two backends never share one), and the stack's
config file (``Pulumi.<stack>.yaml``, where ``stack init`` writes the
passphrase salt) is removed before a runner first selects a stack: the engine
then takes the secrets manager from the stack's own state
(``PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER``). A stale file left by another
backend, another passphrase or an earlier run can therefore never make a stack
undecryptable, and a runner with fresh work directories resumes every stack.
With a KMS secrets provider the file is rewritten instead, naming only the
provider (see ``StackRunner._reset_stack_config``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from pulumi import automation as auto
from pulumi.automation._server import LanguageServer
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import language_pb2_grpc

from iflearner import pulumiruns, stacklocks, toolchain
from iflearner.stacklocks import LOCKED_MESSAGE, StackLockedError

log = logging.getLogger(__name__)

PROJECT_NAME = "iflearner-jobs"
PASSPHRASE_ENV = "PULUMI_CONFIG_PASSPHRASE"
PASSPHRASE_PROVIDER = "passphrase"
# Pulumi's secrets providers for DIY backends besides the passphrase: one KMS call wraps a random
# data key per stack, where the passphrase costs a 1,000,000-round key derivation per CLI process.
KMS_SCHEMES = ("awskms", "gcpkms", "azurekeyvault", "hashivault")
# Settings every job stack's CLI runs with (measured in bench/README.md, "The levers"):
RUNNER_PULUMI_ENV = {
    # A stack's config file is removed before its first select (see the module's docstring):
    # the secrets manager then comes from the stack's checkpoint, salt included. Without this
    # the first run after a restart mints a new salt, and derives the passphrase key twice.
    "PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER": "true",
    # No copy of the checkpoint under .pulumi/backups per update: the backend keeps every
    # update's history already, and the copies were never removed while a stack lived.
    "PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS": "true",
}


class SecretsProviderError(ValueError):
    """A secrets provider URL the runner cannot use; the message says what to set."""


def validate_secrets_provider(value: str) -> str:
    """``passphrase``, or a KMS URL (``awskms://...``); refused with what to fix otherwise."""
    if value == PASSPHRASE_PROVIDER:
        return value
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme not in KMS_SCHEMES:
        raise SecretsProviderError(
            f"secrets provider {value!r} is not supported: use {PASSPHRASE_PROVIDER!r} or a KMS URL "
            f"({', '.join(s + '://' for s in KMS_SCHEMES)}), e.g. awskms://alias/iflearner-jobs?region=us-east-1")
    if parsed.password or parsed.username:
        raise SecretsProviderError(
            "the secrets provider URL holds a credential: pass credentials in the environment "
            "(e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, VAULT_TOKEN), never in the URL")
    return value


@dataclass(frozen=True)
class RunnerSettings:
    """Where stacks keep their state and how their secrets are encrypted."""

    backend_url: str
    passphrase: str
    work_dir: Path
    # New stacks' secrets: "passphrase", or a KMS URL (see validate_secrets_provider).
    secrets_provider: str = PASSPHRASE_PROVIDER

    @classmethod
    def local(cls, state_dir: Path, passphrase: str, secrets_provider: str = PASSPHRASE_PROVIDER) -> RunnerSettings:
        """A ``file://`` backend under ``state_dir`` (the embedded default)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        work_dir = state_dir / "workspace"
        work_dir.mkdir(exist_ok=True)
        return cls(f"file://{(state_dir / 'state').resolve()}", passphrase, work_dir, secrets_provider)


@dataclass
class StackResult:
    """What one stack operation did, in a form that is safe to log and store."""

    operation: str
    stack: str
    succeeded: bool
    changes: dict[str, int] = field(default_factory=dict)
    steps: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    # Why it failed, when the runner knows a specific cause (CamelCase, for a
    # condition reason): "StackLocked", "RunTimedOut", "NotLeader".
    reason: str | None = None
    # destroy: the backend has no such stack (never created, or its state is lost).
    missing: bool = False

    @property
    def changed(self) -> bool:
        # Reads (the CA Secret, the trust bundle) happen on every run and change nothing.
        return any(count for op, count in self.changes.items() if op not in ("same", "read"))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_KNOWN_FAILURES = (StackLockedError, pulumiruns.RunTimeoutError)


def summarize_error(error: BaseException) -> str:
    """The lines of a Pulumi failure that say what went wrong, without noise."""
    text = _ANSI.sub("", str(error))
    stderr = getattr(error, "stderr", "") or ""
    lines = [line.strip() for line in (stderr or text).splitlines()]
    wanted = [
        line for line in lines
        if line and ("error" in line.lower() or "failed" in line.lower()) and "code: " not in line
    ]
    return "; ".join(dict.fromkeys(wanted))[:4000] or text.strip()[:4000]


def _summary_from_event_log(path: Path) -> dict[str, int]:
    """The engine's change summary (the last summaryEvent of an --event-log file)."""
    changes: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return changes
    for line in lines:
        if '"summaryEvent"' not in line:
            continue
        try:
            summary = json.loads(line).get("summaryEvent") or {}
        except ValueError:
            continue
        changes = {str(k): int(v) for k, v in (summary.get("resourceChanges") or {}).items()}
    return changes


def _pulumi_argv(stack: auto.Stack, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment the Automation API would use for ``args``
    (``PulumiCommand.run`` and ``Stack._run_pulumi_cmd_sync``), so that the
    process can be started, timed and stopped here."""
    workspace = stack.workspace
    command = workspace.pulumi_command.command
    argv = [command, "--non-interactive", *args, *workspace.serialize_args_for_op(stack.name),
            "--stack", stack.name]
    env = {**os.environ, "PULUMI_DEBUG_COMMANDS": "true", **workspace.env_vars, "PULUMI_AUTOMATION_API": "true"}
    if workspace.pulumi_home is not None:
        env["PULUMI_HOME"] = workspace.pulumi_home
    if os.path.isabs(command):
        env["PATH"] = os.pathsep.join([os.path.dirname(command), env.get("PATH", "")])
    return argv, env


def _run_inline(stack: auto.Stack, program: Callable[[], None], args: list[str], timeout: float | None,
                registry: pulumiruns.RunRegistry, term_grace: float) -> dict[str, int]:
    """``pulumi <args>`` for an inline program served in-process, with no CLI
    call before or after, stopped at ``timeout``; returns the change summary."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_CHANNEL_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageServer(program), server)
    port = server.add_insecure_port(address="127.0.0.1:0")
    server.start()
    with tempfile.TemporaryDirectory(prefix="iflearner-pulumi-") as temp:
        event_log = Path(temp) / "events.json"
        # --skip-plugin-pre-install: the providers are registered in PULUMI_HOME at setup, and
        # acquisition is off; the check costs each run a little CPU (bench/README.md).
        command = [*args, "--yes", "--skip-preview", "--color=never", "--suppress-progress",
                   "--skip-plugin-pre-install", f"--client=127.0.0.1:{port}", "--exec-kind", "inline",
                   "--event-log", str(event_log)]
        argv, env = _pulumi_argv(stack, command)
        try:
            pulumiruns.run_pulumi(argv, stack.workspace.work_dir, env, operation=args[0], stack=stack.name,
                                  timeout=timeout, term_grace=term_grace, registry=registry)
        finally:
            server.stop(0)
        stack.workspace.post_command_callback(stack.name)
        return _summary_from_event_log(event_log)


class _CreatingWorkspace(auto.LocalWorkspace):
    """A workspace whose stack selection creates a missing stack in the same CLI process.

    The Automation API's create-or-select runs a failing ``stack select`` and then ``stack init``
    for a new stack: two CLI starts (about 0.17 CPU-s each before any work) where one does."""

    def select_stack(self, stack_name: str) -> None:
        self._run_pulumi_cmd_sync(["stack", "select", "--create", "--secrets-provider",
                                   self.secrets_provider or PASSPHRASE_PROVIDER, "--stack", stack_name])


class StackRunner:
    """Preview, up and destroy of inline-program stacks, one work directory each."""

    def __init__(
        self,
        settings: RunnerSettings,
        run_timeout: float | None = pulumiruns.DEFAULT_RUN_TIMEOUT_SECONDS,
        registry: pulumiruns.RunRegistry = pulumiruns.RUNS,
        term_grace: float = pulumiruns.DEFAULT_TERM_GRACE_SECONDS,
        fenced_hosts: Callable[[], Collection[str]] = lambda: (),
    ) -> None:
        """``fenced_hosts``: hosts whose runs are known to be dead (former leaders,
        while this process leads); their locks are removed."""
        self.settings = settings
        self.fenced_hosts = fenced_hosts
        self.run_timeout = run_timeout
        self.term_grace = term_grace
        self.registry = registry
        if settings.backend_url.startswith("file://"):
            Path(settings.backend_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        env = toolchain.pulumi_env()
        env.update(RUNNER_PULUMI_ENV)
        env[PASSPHRASE_ENV] = settings.passphrase
        env["PULUMI_BACKEND_URL"] = settings.backend_url
        self._env = env
        self._command = auto.PulumiCommand(root=str(toolchain.tools_dir()))
        self._stacks: dict[str, auto.Stack] = {}
        self._stacks_lock = threading.Lock()

    def _work_dir(self, stack_name: str) -> Path:
        return backend_work_dir(self.settings) / stack_name

    def _stack(self, stack_name: str, program: Callable[[], None]) -> auto.Stack:
        options = self._workspace_options(stack_name)
        self._reset_stack_config(stack_name)
        options.program = program
        return auto.Stack.select(stack_name, _CreatingWorkspace(**vars(options)))

    def _cached_stack(self, stack_name: str, program: Callable[[], None]) -> tuple[auto.Stack, bool]:
        """The stack, selected once per runner; True if it came from the cache."""
        with self._stacks_lock:
            stack = self._stacks.get(stack_name)
        if stack is not None:
            return stack, True
        stack = self._stack(stack_name, program)
        with self._stacks_lock:
            self._stacks[stack_name] = stack
        return stack, False

    def forget_stack(self, stack_name: str) -> None:
        with self._stacks_lock:
            self._stacks.pop(stack_name, None)

    def _run(self, operation: str, stack_name: str, action: Callable[[], StackResult]) -> StackResult:
        started = time.monotonic()
        try:
            result = action()
        except pulumiruns.FencedError:
            # This replica is no longer the leader: nothing it would report may be written.
            raise
        except _KNOWN_FAILURES as error:
            # Our own messages: complete, and already free of engine noise.
            result = StackResult(operation, stack_name, False, error=str(error), reason=error.reason)
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
                    shutil.rmtree(self._work_dir(stack_name), ignore_errors=True)
            changes = {str(getattr(k, "value", k)): int(v) for k, v in preview.change_summary.items()}
            return StackResult("preview", stack_name, True, changes=changes, steps=steps)

        return self._run("preview", stack_name, action)

    def up(self, stack_name: str, program: Callable[[], None], refresh: bool = False) -> StackResult:
        """Apply the program. ``refresh`` reads the live objects first, so that
        objects deleted or changed behind Pulumi's back are put back."""
        args = ["up", "--refresh"] if refresh else ["up"]

        def action() -> StackResult:
            stack, cached = self._cached_stack(stack_name, program)
            try:
                changes = self._with_recovery(stack, lambda: self._inline(stack, program, args))
            except auto.CommandError as error:
                if not cached or "no stack named" not in str(error).lower():
                    raise
                # Removed behind our back: create it again and retry once.
                self.forget_stack(stack_name)
                stack, _ = self._cached_stack(stack_name, program)
                changes = self._with_recovery(stack, lambda: self._inline(stack, program, args))
            return StackResult("up", stack_name, True, changes=changes)

        result = self._run("up", stack_name, action)
        if not result.succeeded:
            self.forget_stack(stack_name)
        return result

    def outputs(self, stack_name: str) -> dict[str, Any]:
        """The stack's outputs, without secret ones."""
        stack, _ = self._cached_stack(stack_name, lambda: None)
        return {k: v.value for k, v in stack.outputs().items() if not v.secret}

    def export(self, stack_name: str) -> dict[str, Any]:
        """The stack's checkpoint with its secrets decrypted (``pulumi stack export --show-secrets``):
        what anyone holding the state backend and the passphrase can read."""
        stack, _ = self._cached_stack(stack_name, lambda: None)
        return dict(stack.export_stack().deployment or {})

    def destroy(self, stack_name: str, program: Callable[[], None] | None = None) -> StackResult:
        """Destroy the stack's resources, then remove the stack (``destroy
        --remove``); a stack that never existed is a success."""
        self.forget_stack(stack_name)
        program = program or (lambda: None)

        def action() -> StackResult:
            (self._work_dir(stack_name) / f"Pulumi.{stack_name}.yaml").unlink(missing_ok=True)
            try:
                stack = auto.select_stack(stack_name=stack_name, project_name=PROJECT_NAME, program=program,
                                          opts=self._workspace_options(stack_name))
            except auto.StackNotFoundError:
                return StackResult("destroy", stack_name, True, changes={}, missing=True)
            changes = self._with_recovery(stack, lambda: self._inline(stack, program, ["destroy", "--remove"]))
            return StackResult("destroy", stack_name, True, changes=changes)

        result = self._run("destroy", stack_name, action)
        if result.succeeded:
            shutil.rmtree(self._work_dir(stack_name), ignore_errors=True)
        return result

    def _inline(self, stack: auto.Stack, program: Callable[[], None], args: list[str]) -> dict[str, int]:
        return _run_inline(stack, program, args, self.run_timeout, self.registry, self.term_grace)

    def _with_recovery(self, stack: auto.Stack, operation: Callable[[], Any]) -> Any:
        """Run a locking operation. A run killed mid-way leaves its lock and
        pending operations; they are cleared, and the operation retried once,
        only when every lock's run is proven dead. A lock of a run that may be
        alive raises :class:`StackLockedError` naming its holder: the caller
        retries later, and the lock stays."""
        try:
            return operation()
        except auto.CommandError as error:
            if LOCKED_MESSAGE not in str(error):
                raise
            decision = self._lock_decision(stack.name, str(error))
            if not decision.remove:
                raise StackLockedError(decision) from None
        log.warning("removing stale stack locks", extra={"stack": stack.name, "locks": decision.message[:1000]})
        self._remove_locks(stack, decision)
        self._clear_pending_operations(stack)
        return operation()

    @staticmethod
    def _remove_locks(stack: auto.Stack, decision: stacklocks.LockDecision) -> None:
        """Delete exactly the locks judged dead where the backend is a directory; elsewhere
        ``pulumi cancel``, which deletes all of the stack's locks (a run starting at that very
        moment could lose its lock: a narrow window the file:// default does not have)."""
        paths = [urllib.parse.urlparse(v.lock.url) for v in decision.verdicts]
        if paths and all(p.scheme == "file" for p in paths):
            for parsed in paths:
                Path(urllib.parse.unquote(parsed.path)).unlink(missing_ok=True)
            return
        stack.cancel()

    def _lock_decision(self, stack_name: str, lock_error: str) -> stacklocks.LockDecision:
        """Gather what the decision needs (the locks, /proc for this host's PIDs), then decide."""
        locks = stacklocks.parse_locks(_ANSI.sub("", lock_error))
        hostname = socket.gethostname()
        facts = {lock.pid: stacklocks.process_facts(lock.pid) for lock in locks if lock.host == hostname}
        return stacklocks.decide(stack_name, locks, hostname, facts, self.registry.stopped_runs(),
                                 self.fenced_hosts())

    @staticmethod
    def _clear_pending_operations(stack: auto.Stack) -> bool:
        state = stack.export_stack()
        if not state.deployment.get("pending_operations"):
            return False
        # Kubernetes objects are applied server-side, so a create that was in
        # flight is safely re-applied by the next up.
        state.deployment["pending_operations"] = []
        stack.import_stack(state)
        return True

    def list_stacks(self) -> set[str]:
        """The names of every job stack in the backend: one ``pulumi stack ls`` (raises when the
        backend cannot be read)."""
        workspace = auto.LocalWorkspace(**vars(self._workspace_options(INVENTORY_WORK_DIR)))
        return {summary.name for summary in workspace.list_stacks()}

    def _exists(self, stack_name: str) -> bool:
        workspace = auto.LocalWorkspace(**vars(self._workspace_options(stack_name)))
        return any(summary.name == stack_name for summary in workspace.list_stacks())

    def _reset_stack_config(self, stack_name: str) -> None:
        """The stack's config file before its first select by this runner: never one left behind.

        With the passphrase, none: the secrets manager (salt included) comes from the stack's
        checkpoint. With a KMS provider, one that names only the provider: the first run wraps a
        new data key with it, and a stack whose checkpoint is still under the passphrase (an
        installation that changed provider) is re-encrypted by that run -- it needs the old
        passphrase once more, and nothing else."""
        config_file = self._work_dir(stack_name) / f"Pulumi.{stack_name}.yaml"
        if self.settings.secrets_provider == PASSPHRASE_PROVIDER:
            config_file.unlink(missing_ok=True)
        else:
            config_file.write_text(json.dumps({"secretsprovider": self.settings.secrets_provider}) + "\n")

    def _workspace_options(self, stack_name: str) -> auto.LocalWorkspaceOptions:
        work_dir = self._work_dir(stack_name)
        work_dir.mkdir(parents=True, exist_ok=True)
        return auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            pulumi_home=str(toolchain.pulumi_home()),
            env_vars=self._env,
            pulumi_command=self._command,
            secrets_provider=self.settings.secrets_provider,
            # The backend comes from PULUMI_BACKEND_URL only: a URL with
            # credentials must never be written to the work dir's Pulumi.yaml.
            project_settings=auto.ProjectSettings(name=PROJECT_NAME, runtime="python"),
        )


# The work directory of the inventory's listing (not a stack name: those hold a dot).
INVENTORY_WORK_DIR = "_inventory"


def backend_work_dir(settings: RunnerSettings) -> Path:
    """The work directories of one backend's stacks: a backend URL never
    shares them with another (the key is a digest: URLs may hold credentials)."""
    key = hashlib.sha256(settings.backend_url.encode()).hexdigest()[:16]
    return Path(settings.work_dir) / "stacks" / key


def default_passphrase() -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise RuntimeError(
            f"set {PASSPHRASE_ENV} (or --passphrase-file) so that stack secrets are encrypted"
        )
    return value
