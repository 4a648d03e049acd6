"""The built toolchain is the pinned, real one and runs offline."""

from __future__ import annotations

import json
import subprocess

from iflearner import toolchain


def test_pulumi_cli_reports_pinned_version() -> None:
    out = subprocess.run(
        [str(toolchain.tool("pulumi")), "version"], env=toolchain.pulumi_env(),
        check=True, capture_output=True, text=True,
    )
    assert out.stdout.strip() == "v3.274.1"


def test_kubernetes_provider_is_registered_offline() -> None:
    out = subprocess.run(
        [str(toolchain.tool("pulumi")), "plugin", "ls", "--json"], env=toolchain.pulumi_env(),
        check=True, capture_output=True, text=True,
    )
    plugins = {(p["name"], p["kind"], p["version"]) for p in json.loads(out.stdout)}
    assert ("kubernetes", "resource", "4.34.2") in plugins


def test_apiserver_reports_release_version(api_client) -> None:
    from kubernetes import client

    info = client.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.36."), info.git_version
    assert info.major == "1" and info.minor == "36"


def test_pulumi_bounds_its_own_debug_logs(tmp_path) -> None:
    """Every CLI process writes a debug log under $PULUMI_HOME/logs and first rotates that directory
    (Pulumi >= 3.249; the rotation settings since 3.27x). The operator relies on both: its
    settings (toolchain.LOG_ROTATION) keep a day and 16 MB. A Pulumi upgrade that stops writing
    the logs, or stops honouring the settings, fails here (bench/README.md says what it costs)."""
    import datetime
    import os

    home = tmp_path / "home"
    logs = home / "logs"
    logs.mkdir(parents=True)
    now = datetime.datetime.now()
    recent = [logs / f"pulumi-{(now - datetime.timedelta(minutes=m)):%Y%m%dT%H%M%S}-{m}-up.log" for m in range(24)]
    for path in recent:
        path.write_bytes(os.urandom(1024 * 1024))
    old = logs / f"pulumi-{(now - datetime.timedelta(days=3)):%Y%m%dT%H%M%S}-1-up.log"
    old.write_bytes(b"x")
    env = {**toolchain.pulumi_env(), "PULUMI_HOME": str(home), "PULUMI_BACKEND_URL": f"file://{tmp_path}",
           "PULUMI_CONFIG_PASSPHRASE": "x"}
    subprocess.run([str(toolchain.tool("pulumi")), "whoami", "--non-interactive"], env=env, check=True,
                   capture_output=True, cwd=tmp_path)
    assert not old.exists(), "older than PULUMI_LOG_ROTATION_MAX_AGE_DAYS"
    kept = [path for path in recent if path.exists()]
    assert recent[0] in kept and len(kept) <= int(toolchain.LOG_ROTATION["PULUMI_LOG_ROTATION_MAX_TOTAL_MB"])
    assert len(kept) >= 15, "only the oldest go"
    assert [p.name for p in logs.iterdir() if p.name.endswith("whoami.log")], "this process's own log"
