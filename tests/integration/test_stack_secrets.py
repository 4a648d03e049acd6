"""What encrypts a job stack's secrets, with the real Pulumi CLI: the passphrase's salt survives an
operator restart, and a KMS key served by a real local AWS KMS-compatible server (local-kms)
encrypts new stacks and takes over existing passphrase ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from iflearner.localcluster.kms import KmsServer, LocalKms
from iflearner.stackrunner import RunnerSettings, StackRunner

SECRET = "the-job-secret-value"


def program() -> None:
    pulumi.export("token", pulumi.Output.secret(SECRET))
    pulumi.export("plain", "visible")


def checkpoint(settings: RunnerSettings, stack: str) -> dict[str, Any]:
    """The stack's checkpoint as the file:// backend stores it."""
    state_dir = Path(settings.backend_url.removeprefix("file://"))
    (path,) = state_dir.rglob(f"stacks/*/{stack}.json")
    return json.loads(path.read_text())["checkpoint"]["latest"]


def revealed_token(runner: StackRunner, stack: str) -> str:
    """The secret output, decrypted by the CLI (``stack export --show-secrets``)."""
    value = runner.export(stack)["resources"][0]["outputs"]["token"]
    return json.loads(value["plaintext"])


def secrets_manager(settings: RunnerSettings, stack: str) -> dict[str, Any]:
    return checkpoint(settings, stack)["secrets_providers"]


@pytest.fixture
def kms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalKms, KmsServer]]:
    local = LocalKms(tmp_path / "kms")
    server = local.up()
    for name, value in server.credentials.items():
        monkeypatch.setenv(name, value)  # the runner's CLI processes inherit them, as in the operator Pod
    try:
        yield local, server
    finally:
        local.down()


def test_the_first_run_after_a_restart_keeps_the_stacks_salt(tmp_path: Path) -> None:
    """Before PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER, a runner that had not seen a stack minted a
    new salt for it (and so derived the passphrase key twice in that run)."""
    settings = RunnerSettings.local(tmp_path, "restart-passphrase")
    assert StackRunner(settings).up("secrets-restart", program).succeeded
    before = secrets_manager(settings, "secrets-restart")
    assert before["type"] == "passphrase"

    restarted = StackRunner(settings)
    again = restarted.up("secrets-restart", program)
    assert again.succeeded and not again.changed, again
    assert secrets_manager(settings, "secrets-restart") == before
    assert revealed_token(restarted, "secrets-restart") == SECRET


def test_a_kms_key_encrypts_new_stacks_and_takes_over_passphrase_ones(
        tmp_path: Path, kms: tuple[LocalKms, KmsServer]) -> None:
    local, server = kms
    passphrase = RunnerSettings.local(tmp_path / "state", "old-passphrase")
    assert StackRunner(passphrase).up("secrets-old", program).succeeded
    assert secrets_manager(passphrase, "secrets-old")["type"] == "passphrase"

    # The installation switches to the KMS key (iflearner:secretsProvider); the passphrase stays.
    with_kms = RunnerSettings.local(tmp_path / "state", "old-passphrase", server.secrets_provider)
    runner = StackRunner(with_kms)
    encryptions = local.requests("Encryption")
    created = runner.up("secrets-new", program)
    assert created.succeeded, created.error
    manager = secrets_manager(with_kms, "secrets-new")
    assert manager["type"] == "cloud", manager
    assert manager["state"]["url"] == server.secrets_provider
    assert local.requests("Encryption") > encryptions, "the data key is wrapped by the KMS key"
    assert SECRET not in json.dumps(checkpoint(with_kms, "secrets-new"))

    migrated = runner.up("secrets-old", program)
    assert migrated.succeeded and not migrated.changed, migrated
    assert secrets_manager(with_kms, "secrets-old")["type"] == "cloud"

    # Without the passphrase now, after a restart: both stacks open with the KMS key alone.
    kms_only = RunnerSettings.local(tmp_path / "state", "not-the-passphrase", server.secrets_provider)
    restarted = StackRunner(kms_only)
    decryptions = local.requests("Decryption")
    for stack in ("secrets-new", "secrets-old"):
        again = restarted.up(stack, program)
        assert again.succeeded and not again.changed, again
        assert revealed_token(restarted, stack) == SECRET
    assert local.requests("Decryption") > decryptions

    # The KMS unreachable: the run fails and says where it tried.
    local.down()
    unreachable = StackRunner(kms_only).up("secrets-new", program)
    assert not unreachable.succeeded
    assert f"127.0.0.1:{server.port}" in (unreachable.error or ""), unreachable.error
