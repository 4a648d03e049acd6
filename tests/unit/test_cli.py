"""The CLI's contract for bad input, without a cluster."""

from __future__ import annotations

import subprocess
import sys


def test_preview_of_invalid_job_exits_2_with_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: git.iflytek.com/v1\nkind: IflearnerJob\nmetadata: {name: x}\n"
                   "spec: {role: srv, host: Bad_Host}\n")
    result = subprocess.run([sys.executable, "-m", "iflearner", "preview", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("invalid: spec.role:")


def test_a_writable_pulumi_home_links_the_registered_providers(tmp_path, monkeypatch):
    from iflearner import toolchain

    tools = tmp_path / "tools"
    (tools / "pulumi-home" / "plugins" / "resource-kubernetes-v4.34.2").mkdir(parents=True)
    (tools / "pulumi-home" / "plugins" / "resource-kubernetes-v4.34.2" / "pulumi-resource-kubernetes").write_text("")
    (tools / "pulumi-home" / "plugins" / "resource-kubernetes-v4.34.2.lock").write_text("")
    monkeypatch.setenv(toolchain.TOOLS_DIR_ENV, str(tools))
    monkeypatch.setenv(toolchain.PULUMI_HOME_ENV, str(tmp_path / "home"))
    toolchain.tools_dir.cache_clear()
    try:
        home = toolchain.pulumi_home()
        assert home == tmp_path / "home"
        plugin = home / "plugins" / "resource-kubernetes-v4.34.2"
        assert plugin.is_dir() and not plugin.is_symlink(), "the CLI skips plugin directories that are symlinks"
        binary = plugin / "pulumi-resource-kubernetes"
        assert binary.is_symlink() and binary.resolve().parent.parent == tools / "pulumi-home" / "plugins"
        lock = home / "plugins" / "resource-kubernetes-v4.34.2.lock"
        assert lock.is_file() and not lock.is_symlink()
        assert toolchain.pulumi_home() == home  # idempotent
    finally:
        toolchain.tools_dir.cache_clear()


def test_images_push_refuses_what_it_cannot_push_before_building(capsys):
    from iflearner.cli import main

    assert main(["images", "push", "registry.example.com", "nope"]) == 2
    assert "no installed image named nope; choose of iflearner-operator, traefik" in capsys.readouterr().err
    assert main(["images", "push", "https://registry.example.com/x"]) == 1
    assert "is not a registry: give host[:port][/prefix]" in capsys.readouterr().err
