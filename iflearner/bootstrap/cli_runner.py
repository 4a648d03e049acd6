"""Running the bootstrap project with the real Pulumi CLI, offline.

The demo and the tests use this; a person runs the same thing with
``scripts/pulumi`` (which sets the same environment) from the repo root.
The CLI runs in a private copy of the project (Pulumi.yaml, __main__.py and
the one stack config), because ``stack init`` writes the stack's secrets
salt into its config file: a demo must not edit the repository's files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iflearner import toolchain
from iflearner.toolchain import REPO_ROOT


@dataclass(frozen=True)
class BootstrapProject:
    """One bootstrap stack of the top-level project, with its own state dir."""

    stack: str
    kubeconfig: Path
    state_dir: Path
    passphrase: str
    # Another stack config file than stacks/Pulumi.<stack>.yaml (tests use one).
    config_file: Path | None = None

    @property
    def project_dir(self) -> Path:
        return self.state_dir / "project"

    def _prepare_project(self) -> None:
        stacks = self.project_dir / "stacks"
        stacks.mkdir(parents=True, exist_ok=True)
        for name in ("Pulumi.yaml", "__main__.py"):
            shutil.copyfile(REPO_ROOT / name, self.project_dir / name)
        target = stacks / f"Pulumi.{self.stack}.yaml"
        if not target.exists():
            shutil.copyfile(self.config_file or REPO_ROOT / "stacks" / f"Pulumi.{self.stack}.yaml", target)

    def env(self) -> dict[str, str]:
        env = toolchain.pulumi_env()
        self._prepare_project()
        env.update({
            "PULUMI_BACKEND_URL": f"file://{self.state_dir.resolve()}",
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
            "KUBECONFIG": str(self.kubeconfig),
        })
        return env

    def pulumi(self, *args: str, progress: Callable[[str], None] | None = None, timeout: float = 900) -> str:
        """Run the real CLI in the project directory; raises with its output on failure."""
        command = [str(toolchain.tool("pulumi")), *args, "--stack", self.stack, "--non-interactive"]
        env = self.env()
        proc = subprocess.Popen(command, cwd=self.project_dir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if progress and line.strip():
                progress(line.rstrip())
        code = proc.wait(timeout=timeout)
        output = "".join(lines)
        if code != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed (exit {code}):\n{output[-4000:]}")
        return output

    def ensure_stack(self) -> None:
        listed = json.loads(self.pulumi_raw("stack", "ls", "--json"))
        if not any(s["name"] == self.stack for s in listed):
            self.pulumi_raw("stack", "init", self.stack)

    def set_config(self, key: str, value: str, secret: bool = False, path: bool = False) -> None:
        """``pulumi config set``; the value goes on stdin, never in a process's arguments.
        ``path``: ``key`` is a path into a structured value (``iflearner:peerCaCertificates.server[0]``)."""
        flags = ["--secret"] if secret else ["--plaintext"]
        self.pulumi_raw("config", "set", *(["--path"] if path else []), key, *flags, "--stack", self.stack,
                        stdin=value)

    def remove_config(self, key: str) -> None:
        """``pulumi config rm``."""
        self.pulumi_raw("config", "rm", key, "--stack", self.stack)

    def pulumi_raw(self, *args: str, stdin: str | None = None) -> str:
        env = self.env()
        out = subprocess.run([str(toolchain.tool("pulumi")), *args, "--non-interactive"], cwd=self.project_dir,
                             env=env, capture_output=True, text=True, timeout=300, input=stdin)
        if out.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed: {out.stderr or out.stdout}")
        return out.stdout

    def up(self, progress: Callable[[str], None] | None = None) -> str:
        self.ensure_stack()
        return self.pulumi("up", "--yes", "--skip-preview", progress=progress)

    def preview(self) -> str:
        self.ensure_stack()
        return self.pulumi("preview", "--diff")

    def destroy(self, progress: Callable[[str], None] | None = None) -> str:
        return self.pulumi("destroy", "--yes", "--skip-preview", progress=progress)

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json"))
