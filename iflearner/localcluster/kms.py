"""A local AWS KMS-compatible server for the ``awskms://`` secrets provider of job stacks.

``local-kms`` (github.com/nsmithuk/local-kms, built by ``scripts/build-toolchain.sh``) speaks
the AWS KMS API with real AES-GCM encryption. It is for tests and benchmarks only: its key
material lives in a file, and it listens on every interface (it has no bind-address setting),
so each server gets a random key of its own, written with mode 0600, and is stopped after use.

The Pulumi CLI reaches it through gocloud's ``endpoint`` URL parameter; the AWS SDK needs some
credentials and a region, which any value satisfies.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

from iflearner import toolchain
from iflearner.localcluster import processes

STATE_FILE = "kms.json"
ALIAS = "alias/iflearner-jobs"
REGION = "us-east-1"
ACCOUNT_ID = "111122223333"
_STARTED = re.compile(r"Local KMS started on [0-9.]+:(\d+)")


class KmsError(RuntimeError):
    """The local KMS could not be started; the message says why."""


@dataclass(frozen=True)
class KmsServer:
    port: int
    key_id: str
    process: processes.ProcessRecord

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets_provider(self) -> str:
        """The stacks' secrets provider URL: the key's alias, served by this server."""
        query = urllib.parse.urlencode({"region": REGION, "endpoint": self.endpoint})
        return f"awskms://{ALIAS}?{query}"

    @property
    def credentials(self) -> dict[str, str]:
        """The environment the AWS SDK needs: local-kms checks none of it."""
        return {"AWS_ACCESS_KEY_ID": "local-kms", "AWS_SECRET_ACCESS_KEY": "local-kms", "AWS_REGION": REGION}


class LocalKms:
    """One local-kms server rooted at ``data_dir`` (its key, database and log)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()

    def _seed(self) -> tuple[Path, str]:
        """The seed file: one AES key under the alias, made once per data directory."""
        seed = self.data_dir / "seed.json"
        if not seed.exists():
            key_id = str(uuid.uuid4())
            seed.touch(mode=0o600)
            # YAML is a superset of JSON: local-kms reads this as its seed file.
            seed.write_text(json.dumps({
                "Keys": {"Symmetric": {"Aes": [{"Metadata": {"KeyId": key_id},
                                                 "BackingKeys": [secrets.token_hex(32)]}]}},
                "Aliases": [{"AliasName": ALIAS, "TargetKeyId": key_id}],
            }))
        key_id = json.loads(seed.read_text())["Aliases"][0]["TargetKeyId"]
        return seed, key_id

    def up(self, timeout: float = 30.0) -> KmsServer:
        """Start the server (or find it running) on a port the kernel picks."""
        running = self.running()
        if running is not None:
            return running
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        seed, key_id = self._seed()
        (self.data_dir / "data").mkdir(exist_ok=True)
        log = self.data_dir / "kms.log"
        log.unlink(missing_ok=True)
        record, _ = processes.start("local-kms", [str(toolchain.tool("local-kms"))], log, env={
            "PORT": "0", "KMS_REGION": REGION, "KMS_ACCOUNT_ID": ACCOUNT_ID,
            "KMS_SEED_PATH": str(seed), "KMS_DATA_PATH": str(self.data_dir / "data")})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _STARTED.search(log.read_text(errors="replace")) if log.exists() else None
            if found:
                server = KmsServer(int(found.group(1)), key_id, record)
                (self.data_dir / STATE_FILE).write_text(json.dumps({"port": server.port, "key_id": key_id,
                                                                    "process": record.to_dict()}))
                return server
            if not processes.is_alive(record):
                break
            time.sleep(0.05)
        processes.stop(record)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise KmsError(f"local-kms did not start in {timeout:.0f}s; its log ({log}): {tail}")

    def running(self) -> KmsServer | None:
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        record = processes.ProcessRecord.from_dict(saved["process"])
        if not processes.is_alive(record):
            return None
        return KmsServer(int(saved["port"]), saved["key_id"], record)

    def requests(self, operation: str) -> int:
        """How many requests of ``operation`` (``Encryption``, ``Decryption``...) the server logged."""
        log = self.data_dir / "kms.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return len(re.findall(rf"\b{re.escape(operation)} called", text))

    def down(self) -> None:
        path = self.data_dir / STATE_FILE
        if path.exists():
            processes.stop(processes.ProcessRecord.from_dict(json.loads(path.read_text())["process"]))
            path.unlink()
