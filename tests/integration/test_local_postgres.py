"""The local PostgreSQL (the postgres:// backend's test server) keeps its files where no other
user can plant anything: root never hands a path it did not create to the postgres user. (Run as
root, as the suite is: as another user the files stay in the data directory.)"""

from __future__ import annotations

import hashlib
import pwd
import shutil
import stat
from pathlib import Path

from iflearner.localcluster.postgres import LocalPostgres


def test_the_database_files_are_private_and_no_planted_symlink_is_followed(tmp_path: Path) -> None:
    data_dir = (tmp_path / "postgres").resolve()
    # Where the files used to go: a name anyone could compute, and plant as a symlink.
    predictable = Path("/var/tmp/iflearner-postgres") / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    predictable.parent.mkdir(parents=True, exist_ok=True)
    predictable.unlink(missing_ok=True)
    predictable.symlink_to(victim)
    local = LocalPostgres(data_dir)
    try:
        first = local.up()
        assert victim.stat().st_uid == 0 and not any(victim.iterdir()), "the planted symlink was followed"
        files = local.files_dir
        info = files.lstat()
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == pwd.getpwnam("postgres").pw_uid
        assert files.parent == Path("/var/tmp") and files != predictable
        local.down()
        again = LocalPostgres(data_dir)
        assert again.files_dir == files, "found again from its record"
        assert again.up().url.split("@")[0] == first.url.split("@")[0], "the same role and password"
        again.down(remove_data=True)
        assert not files.exists()
    finally:
        local.down(remove_data=True)
        predictable.unlink(missing_ok=True)
        if not any(predictable.parent.iterdir()):
            predictable.parent.rmdir()
        shutil.rmtree(victim, ignore_errors=True)
