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
