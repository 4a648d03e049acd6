"""A local PostgreSQL server for the Pulumi ``postgres://`` state backend:
Debian's PostgreSQL binaries, started like the control plane's processes,
with its data under a directory of its own and a password-protected role.

PostgreSQL refuses to run as root; on these machines (root, no systemd) the
server runs as the package's ``postgres`` user through ``setpriv``, which
execs (so the recorded pid is the server's own). That user cannot enter
root's private directories (``/root``, pytest's temp dirs), so as root the
database files live in a private directory under ``/var/tmp`` whose name
nobody can guess (``mkdtemp``: created, never found, so no other user can
plant it or a symlink in its place), recorded in the data directory; the data
directory keeps that record, the state file, log and password. Ownership is
handed to ``postgres`` with ``lchown`` only, and root writes nothing into a
directory ``postgres`` owns without ``O_NOFOLLOW``.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from iflearner.localcluster import processes

STATE_FILE = "postgres.json"
DATABASE = "pulumi"
ROLE = "iflearner"


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be started; the message says why."""


def _private_to_postgres(path: Path) -> bool:
    """A real directory (not a symlink) of the postgres user, closed to everyone else."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == pwd.getpwnam("postgres").pw_uid \
        and stat.S_IMODE(info.st_mode) & 0o077 == 0


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _read_nofollow(path: Path) -> str:
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW)) as data:
        return data.read()


def _write_nofollow(path: Path, text: str) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW), "w") as out:
        out.write(text)


def _bin(name: str) -> Path:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise PostgresError(
            f"PostgreSQL's {name} is not installed (looked in /usr/lib/postgresql/*/bin); "
            "run `make setup`, which installs Debian's postgresql package")
    return Path(found[-1])


@dataclass(frozen=True)
class PostgresServer:
    url: str  # postgres://role:password@127.0.0.1:port/db?sslmode=disable
    port: int
    process: processes.ProcessRecord


class LocalPostgres:
    """One PostgreSQL server rooted at ``data_dir`` (created on first ``up``)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._files_dir: Path | None = None if os.geteuid() == 0 else self.data_dir

    @property
    def files_dir(self) -> Path:
        """Where the database files are: as root, this data directory's private directory under
        /var/tmp (made on first use, and found again from its record while it is intact)."""
        if self._files_dir is None:
            record = self.data_dir / "files-dir"
            recorded = Path(record.read_text().strip()) if record.exists() else None
            if recorded is None or not _private_to_postgres(recorded):
                self.data_dir.mkdir(parents=True, exist_ok=True)
                recorded = Path(tempfile.mkdtemp(prefix="iflearner-postgres-", dir="/var/tmp"))
                record.write_text(f"{recorded}\n")
            self._files_dir = recorded
        return self._files_dir

    def _as_postgres(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        user = pwd.getpwnam("postgres")
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]

    def _chown(self, path: Path) -> None:
        """Hand ``path`` itself (never what a symlink there points to) to the postgres user."""
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def up(self, timeout: float = 60.0, address: str = "127.0.0.1", clients: tuple[str, ...] = (),
           port: int | None = None) -> PostgresServer:
        """Start (or find running) the server on ``address``; ``clients`` are
        CIDRs allowed to log in with the password besides loopback (e.g. the
        real node's Pod subnet, for an operator Pod). ``port``: the port of an
        earlier start (the same URL again, after a crash); a free one by default."""
        running = self.running()
        if running is not None:
            return running
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        pgdata, sockets = self.files_dir / "pgdata", self.files_dir / "sockets"
        password_file = self.data_dir / "password"
        if not (pgdata / "PG_VERSION").exists():
            shutil.rmtree(pgdata, ignore_errors=True)
            password_file.write_text(secrets.token_urlsafe(18))
            password_file.chmod(0o600)
            pwfile = self.files_dir / "initdb-password"
            pwfile.unlink(missing_ok=True)
            _write_new(pwfile, password_file.read_text())
            self._chown(pwfile)
            self._chown(self.files_dir)
            result = subprocess.run(
                [*self._as_postgres(), str(_bin("initdb")), "-D", str(pgdata), "-U", ROLE, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--no-sync"], capture_output=True, text=True, cwd="/")
            pwfile.unlink()
            if result.returncode != 0:
                raise PostgresError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        self._chown(self.files_dir)
        if not sockets.is_dir() or sockets.is_symlink():
            sockets.unlink(missing_ok=True)
            sockets.mkdir()
        self._chown(sockets)
        hba = pgdata / "pg_hba.conf"
        text = _read_nofollow(hba)
        for cidr in clients:
            line = f"host all all {cidr} scram-sha-256"
            if line not in text:
                text += line + "\n"
        _write_nofollow(hba, text)
        port = port or processes.free_ports(1)[0]
        record, _ = processes.start("postgres", [
            *self._as_postgres(), str(_bin("postgres")), "-D", str(pgdata), "-p", str(port),
            "-c", f"listen_addresses={address}", "-c", f"unix_socket_directories={sockets}", "-c", "fsync=off",
        ], self.data_dir / "postgres.log")
        password = password_file.read_text().strip()
        server = PostgresServer(
            f"postgres://{ROLE}:{password}@{address}:{port}/{DATABASE}?sslmode=disable", port, record)
        (self.data_dir / STATE_FILE).write_text(json.dumps({"url": server.url, "port": port,
                                                            "process": record.to_dict()}))
        self._wait_and_create_database(server, password, timeout)
        return server

    def _wait_and_create_database(self, server: PostgresServer, password: str, timeout: float) -> None:
        env = {**os.environ, "PGPASSWORD": password}
        host = server.url.split("@", 1)[1].rsplit(":", 1)[0]
        psql = [str(_bin("psql")), "-h", host, "-p", str(server.port), "-U", ROLE, "-d", "postgres", "-tA"]
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not processes.is_alive(server.process):
                raise PostgresError(f"postgres exited; see {self.data_dir / 'postgres.log'}")
            check = subprocess.run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
                                   capture_output=True, text=True, env=env)
            if check.returncode == 0:
                if check.stdout.strip() != "1":
                    subprocess.run([*psql, "-c", f"CREATE DATABASE {DATABASE}"], check=True,
                                   capture_output=True, env=env)
                return
            last = check.stderr.strip()
            time.sleep(0.2)
        raise PostgresError(f"postgres did not accept connections in {timeout:.0f}s: {last}")

    def crash_and_restart(self) -> PostgresServer:
        """SIGKILL the server (a crash: it recovers from its WAL when it starts) and start it again
        on the same port, so its URL stays valid; for fault-injection runs."""
        server = self.running()
        if server is None:
            raise PostgresError(f"no PostgreSQL server is running from {self.data_dir}")
        processes.kill(server.process)
        (self.data_dir / STATE_FILE).unlink()
        return self.up(port=server.port)

    def running(self) -> PostgresServer | None:
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        record = processes.ProcessRecord.from_dict(saved["process"])
        if not processes.is_alive(record):
            return None
        return PostgresServer(saved["url"], int(saved["port"]), record)

    def down(self, remove_data: bool = False) -> None:
        """Stop the server; ``remove_data`` also deletes its database files."""
        path = self.data_dir / STATE_FILE
        if path.exists():
            processes.stop(processes.ProcessRecord.from_dict(json.loads(path.read_text())["process"]))
            path.unlink()
        if remove_data:
            shutil.rmtree(self.files_dir, ignore_errors=True)
            (self.data_dir / "files-dir").unlink(missing_ok=True)
            (self.data_dir / "password").unlink(missing_ok=True)
